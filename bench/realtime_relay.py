"""Live captions: what Channels adds to each partial, how soon spoken words show up, and how
fast batch transcription runs.

Starts real Daphne servers on the configured database (embedded defaults in a throwaway folder
unless DATABASE_URL / REDIS_URL are set) and prints:

- relay: engine event → browser socket, per partial, through the live-captions consumer (a
  stub engine stamps each partial when it makes it; see realtime_asgi.py); and the same to
  a watcher's socket, through the channel layer
- caption latency: an audio frame sent at real-time pace → the first partial that contains
  its word (local engine: pocketsphinx partials), over LibriVox speech. A word spans several
  frames: each word counts once, from the frame at its middle (its first frame waits longest,
  its last the least); the word times come from Whisper's alignment of the same audio. The
  line "from its first frame" is the worst frame of each word.
- batch RTF: local-engine transcription time ÷ audio length, short and long (chunked)

    .venv/bin/python bench/realtime_relay.py [--frames 300]
"""

import argparse
import asyncio
import io
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import wave
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

if not os.environ.get("DATABASE_URL"):
    os.environ.setdefault("CHORUS_VAR_DIR", tempfile.mkdtemp(prefix="chorus-bench-"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studio_site.settings")
os.environ.setdefault("CHORUS_CHANNEL_PREFIX", f"chorus-bench-{os.getpid()}")

import django  # noqa: E402

django.setup()

import numpy as np  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import Client  # noqa: E402
from websockets.asyncio.client import connect  # noqa: E402

from apps.engines.base import STTRequest  # noqa: E402
from apps.engines.local import stt as local_stt  # noqa: E402
from apps.transcripts import live  # noqa: E402
from apps.workspaces.models import User, Workspace  # noqa: E402
from apps.workspaces.services import workspace_create  # noqa: E402

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
FRAME = 3200  # 100 ms of 16 kHz s16le


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pct(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def line(name, values, unit="ms"):
    return (f"{name:>16}: p50 {statistics.median(values):7.1f} {unit}   p95 {pct(values, 95):7.1f}"
            f" {unit}   max {max(values):7.1f} {unit}   (n={len(values)})")  # fmt: skip


LOGS = Path(tempfile.mkdtemp(prefix="chorus-bench-logs-"))


def serve(app: str):
    """Daphne serving ``app``; its output goes to a file in ``LOGS`` (a pipe nobody reads
    would fill up and stall it)."""
    port = free_port()
    log = open(LOGS / f"daphne-{port}.log", "wb")  # noqa: SIM115 (kept open while it runs)
    proc = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), app],
        cwd=ROOT, stdout=log, stderr=log, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)  # noqa: S310
            return proc, port
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"Daphne ({app}) did not start") from None
            time.sleep(0.2)


def stop(proc):
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


def speech() -> tuple[bytes, float]:
    """The LibriVox utterances with pauses, as 16 kHz s16le, and their length in seconds."""
    pieces = []
    for path in sorted(LIBRIVOX.glob("*.wav")):
        with wave.open(str(path)) as w:
            pieces.append(np.frombuffer(w.readframes(w.getnframes()), dtype="<i2"))
            pieces.append(np.zeros(9600, dtype="<i2"))
    if not pieces:
        raise SystemExit(f"{LIBRIVOX} is missing: apt-get install pocketsphinx-testdata")
    pcm = np.concatenate(pieces).astype("<i2").tobytes()
    return pcm, len(pcm) / 32000


def wav_of(pcm: bytes) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm)
    return out.getvalue()


def tokens(text: str) -> list[str]:
    return re.sub(r"[^a-z' ]", " ", text.lower()).split()


async def relay(port, cookie, session_pk, frames: int) -> tuple[list[float], list[float]]:
    """Per partial: engine event → the captioning browser's socket, and → a watcher's socket
    (through the channel layer group)."""
    url = f"ws://127.0.0.1:{port}/ws/transcripts/live/{session_pk}/"
    headers = {"Cookie": cookie, "Origin": f"http://127.0.0.1:{port}"}
    own, watched = [], []
    async with (
        connect(url, additional_headers=headers) as ws,
        connect(url + "watch/", additional_headers=headers) as watcher,
    ):
        json.loads(await ws.recv())  # session
        json.loads(await watcher.recv())
        for _ in range(frames):
            await ws.send(b"\0\0" * 1600)
            event = json.loads(await asyncio.wait_for(ws.recv(), timeout=10))
            own.append((time.time_ns() - int(event["text"])) / 1e6)
            event = json.loads(await asyncio.wait_for(watcher.recv(), timeout=10))
            watched.append((time.time_ns() - int(event["text"])) / 1e6)
    return own[5:], watched[5:]  # the first frames warm the consumer up


async def captions(port, cookie, session_pk, pcm: bytes, reference) -> list[float]:
    """Send ``pcm`` at real-time pace; for each reference word (its end time in the audio),
    the delay from the moment its audio was sent to the first partial holding it."""
    url = f"ws://127.0.0.1:{port}/ws/transcripts/live/{session_pk}/"
    headers = {"Cookie": cookie, "Origin": f"http://127.0.0.1:{port}"}
    latencies = []
    async with connect(url, additional_headers=headers, max_size=None) as ws:
        json.loads(await ws.recv())
        started = time.monotonic()

        async def send():
            for k, start in enumerate(range(0, len(pcm), FRAME)):
                await asyncio.sleep(max(0.0, started + (k + 1) * 0.1 - time.monotonic()))
                await ws.send(pcm[start : start + FRAME])

        sender = asyncio.create_task(send())
        next_word = 0
        try:
            while next_word < len(reference):
                try:
                    event = json.loads(await asyncio.wait_for(ws.recv(), timeout=5))
                except TimeoutError:
                    if sender.done():
                        break
                    continue
                if event["type"] not in ("partial", "committed"):
                    continue
                now = time.monotonic() - started
                heard = tokens(event["text"])
                # Words of the event that come next in the reference (a word may be
                # skipped when recognition missed it): each is timed at its first sight.
                for token in heard:
                    window = reference[next_word : next_word + 3]
                    match = next((i for i, (w, *_t) in enumerate(window) if w == token), None)
                    if match is None:
                        continue
                    next_word += match
                    _word, start, end = reference[next_word]
                    if event["type"] == "partial":
                        latencies.append(((now - (start + end) / 2) * 1000, (now - start) * 1000))
                    next_word += 1
        finally:
            sender.cancel()
    return latencies


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300, help="relay frames to time")
    args = parser.parse_args()

    call_command("migrate", verbosity=0)
    user = User.objects.create_user(email=f"bench-{os.getpid()}@example.com", password="x" * 12)
    workspace = workspace_create(name=f"Bench {os.getpid()}", owner=user)
    client = Client()
    client.force_login(user)
    cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
    pcm, seconds = speech()
    procs = []
    try:
        # 1. Relay alone: a stub engine stamps each partial as it makes it.
        proc, port = serve("bench.realtime_asgi:application")
        procs.append(proc)
        session = live.live_start(workspace=workspace, user=user)
        relayed, watched = asyncio.run(relay(port, cookie, session.pk, args.frames))
        stop(procs.pop())

        # 2. Caption latency with the real local engine, speech at real-time pace.
        result = local_stt.transcribe(STTRequest(audio=wav_of(pcm), filename="speech.wav"))
        reference = [
            (t, w.start, w.end)
            for w in result.words
            if w.type == "word"
            for t in tokens(w.text)[:1]
        ]
        proc, port = serve("studio_site.asgi:application")
        procs.append(proc)
        session = live.live_start(workspace=workspace, user=user)
        caption = asyncio.run(captions(port, cookie, session.pk, pcm, reference))
        stop(procs.pop())

        # 3. Batch real-time factor (short, and long in chunks as the job runs it).
        started = time.perf_counter()
        local_stt.transcribe(STTRequest(audio=wav_of(pcm), filename="short.wav"))
        short_rtf = (time.perf_counter() - started) / seconds
        long_pcm = pcm * 6
        started = time.perf_counter()
        local_stt.transcribe(STTRequest(audio=wav_of(long_pcm), filename="long.wav",
                                        progress=lambda share: None))  # fmt: skip
        long_rtf = (time.perf_counter() - started) / (seconds * 6)
    except Exception:
        print(f"server logs: {LOGS}", file=sys.stderr)
        raise
    finally:
        for proc in procs:
            stop(proc)
        Workspace.objects.filter(pk=workspace.pk).delete()
        user.delete()

    layer = settings.CHANNEL_LAYERS["default"]["BACKEND"].rsplit(".", 1)[-1]
    db = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    print(f"database: {db}  channel layer: {layer}  cores: {os.cpu_count()}")
    print(line("relay", relayed))
    print(line("relay to watcher", watched))
    print(line("caption latency", [middle for middle, _ in caption]))
    print(line("from first frame", [first for _, first in caption]))
    print(f"{'batch RTF':>16}: {short_rtf:.3f} ({seconds:.0f} s of speech)   "
          f"{long_rtf:.3f} ({seconds * 6:.0f} s, in chunks)")  # fmt: skip
    print("\ntargets:")
    relay_p50 = statistics.median(relayed)
    caption_p50 = statistics.median([middle for middle, _ in caption])
    print(f"  relay p50 <= 5 ms                     {relay_p50:7.2f}  "
          f"{'MET' if relay_p50 <= 5 else 'MISSED'}")  # fmt: skip
    print(f"  caption latency p50 <= 300 ms         {caption_p50:7.1f}  "
          f"{'MET' if caption_p50 <= 300 else 'MISSED'}")  # fmt: skip


if __name__ == "__main__":
    main()
