"""The ASGI application ``bench/agents.py`` serves: Chorus as shipped, with stamps.

Nothing of Chorus's behaviour changes; every ``AgentSession`` keeps a log of when things
happened in it (``time.perf_counter``: CLOCK_MONOTONIC on Linux, the same clock in the bench
process), written to ``$CHORUS_BENCH_STAMPS/<conversation_id>.json`` when it is saved:

- ``event``: each event the session produced, the moment it was put in its outbox (``_out``,
  which the consumer's pump takes from); audio events carry their base64 payload's hash, so
  the bench can match the binary frame the browser socket received;
- ``reply``: the responder took the user's turn (``_reply`` began);
- ``first_sentence``: the LLM's first complete sentence of a turn went to the TTS;
- ``interrupt``: the listener decided the user spoke over the agent, with the moment the
  audio chunk that told it was fed to the session.

Also ``/bench/floor/``: a Channels consumer built like the talk socket's relay (a worker
thread makes a 100 ms frame every 100 ms and notifies a condition; the pump waits for it in
a worker thread and sends it), without Chorus: the floor the relay figure is set against.
Each frame starts with the ``perf_counter_ns`` of its making.

``CHORUS_BENCH_PATCH`` (comma-separated) applies the bench's proposed patches (see
``bench/agents_patches.py``) to measure them; unset, Chorus runs as shipped.
"""

import collections
import hashlib
import json
import os
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studio_site.settings")

import django  # noqa: E402

django.setup()

from asgiref.sync import sync_to_async  # noqa: E402
from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402

from apps.agents import session as agent_session  # noqa: E402
from studio_site.asgi import application as chorus  # noqa: E402

STAMPS = Path(os.environ.get("CHORUS_BENCH_STAMPS") or tempfile.gettempdir())
Session = agent_session.AgentSession


def digest(text: str) -> str:
    return hashlib.blake2b(text.encode("ascii"), digest_size=8).hexdigest()


class StampedOutbox(collections.deque):
    """The session's outbox: notes when each event is put in (``extend``, which only puts
    back what an interruption kept, is not a new event)."""

    def __init__(self, log):
        super().__init__()
        self.log = log

    def append(self, item):
        self.log.append(("event", time.perf_counter(), item[0], item[1]))
        super().append(item)


_init = Session.__init__


def __init__(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    self._bench_log = []
    self._out = StampedOutbox(self._bench_log)


_reply = Session._reply


def reply(self, question, timing):
    at = time.perf_counter()
    number = self._turn_number + 1  # the agent turn ``_reply`` makes
    try:
        return _reply(self, question, timing)
    finally:
        turn = next((t for t in self._turns if t.number == number), None)
        latency = dict(turn.latency_ms) if turn is not None else {}
        info = {
            "speech_end": timing["speech_end"],
            "stt_start": timing["stt_start"],
            "stt_ms": timing["stt_ms"],
            "retrieval_ms": latency.get("retrieval", 0),
            "llm_ms": latency.get("llm", 0),
            "latency_ms": latency,
            "cached_tokens": getattr(getattr(self._llm, "__self__", None), "cached_tokens", None),
        }
        self._bench_log.append(("reply", at, question, info, number))


_speak = Session._speak


def speak(self, turn, sentence, latency, timing=None):
    if timing is not None and not getattr(turn, "_bench_first", False):
        turn._bench_first = True
        self._bench_log.append(("first_sentence", time.perf_counter(), turn.number, sentence))
    return _speak(self, turn, sentence, latency, timing)


_heard = Session._heard


def heard(self, pcm):
    self._bench_chunk_end = self._heard_to + len(pcm) // 2  # the chunk being heard
    return _heard(self, pcm)


_interrupt = Session._interrupt


def interrupt(self):
    fed = self._wall_at(self._bench_chunk_end)  # when the chunk that told the listener was fed
    self._bench_log.append(("interrupt", time.perf_counter(), fed))
    return _interrupt(self)


_save = Session._save


def save(self, **kwargs):
    conversation = _save(self, **kwargs)
    entries = []
    for kind, at, *rest in list(self._bench_log):
        if kind == "event":
            turn, event = rest
            entry = {"kind": kind, "at": at, "turn": turn, "type": event["type"]}
            if event["type"] == "audio":
                entry["hash"] = digest(event["audio_event"]["audio_base_64"])
            entries.append(entry)
        else:
            entries.append({"kind": kind, "at": at, "data": rest})
    path = STAMPS / f"{conversation.conversation_id}.json"
    path.write_text(json.dumps(entries))
    return conversation


Session.__init__ = __init__
Session._reply = reply
Session._speak = speak
Session._interrupt = interrupt
Session._heard = heard
Session._save = save

for name in filter(None, os.environ.get("CHORUS_BENCH_PATCH", "").split(",")):
    import agents_patches

    agents_patches.apply(name)


class FloorConsumer(AsyncWebsocketConsumer):
    """The relay's floor: a thread makes frames, a pump in a worker thread hands them over."""

    channel_layer_alias = None

    async def connect(self):
        await self.accept()
        self.ready = threading.Condition()
        self.frames = collections.deque()
        self.stop = threading.Event()
        threading.Thread(target=self.make, daemon=True).start()
        self.pump = __import__("asyncio").create_task(self.relay())

    def make(self):
        body = os.urandom(3192)
        while not self.stop.wait(0.1):
            with self.ready:
                self.frames.append(struct.pack("<q", time.perf_counter_ns()) + body)
                self.ready.notify_all()

    def wait(self, timeout):
        with self.ready:
            if not self.frames:
                self.ready.wait(timeout)
            frames = list(self.frames)
            self.frames.clear()
        return frames

    async def relay(self):
        wait = sync_to_async(self.wait, thread_sensitive=False)
        while not self.stop.is_set():
            for frame in await wait(0.2):
                await self.send(bytes_data=frame)

    async def disconnect(self, code):
        self.stop.set()
        self.pump.cancel()


floor = FloorConsumer.as_asgi()


async def application(scope, receive, send):
    if scope["type"] == "websocket" and scope["path"] == "/bench/floor/":
        return await floor(scope, receive, send)
    return await chorus(scope, receive, send)
