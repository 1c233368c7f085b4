"""What both conversation sessions (the local ``AgentSession`` and the provider's
``RelaySession``) share: the queue of events the sockets read, the locks that end a session
once (and never while it starts), and the saved row's tracks and turns (``_save``).

Subclasses set ``conversation``, ``meter``, ``_user``, ``_agent`` and ``_turns`` and define
``_end(reason, failed=, wait=)`` (their own workers stopped, then ``_save``).
"""

from __future__ import annotations

import collections
import threading

from .config import AgentConfig
from .models import Conversation
from .saving import conversation_save, error_event


class SessionEvents:
    def __init__(self):
        self._lock = threading.RLock()
        self._ready = threading.Condition(self._lock)
        self._out: collections.deque = collections.deque()  # (turn number or 0, event)
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._ended = threading.Event()
        self._end_lock = threading.Lock()
        # Held while ``start`` runs: ``end`` from another thread (a socket that went away
        # while the conversation was opening) waits for it, so nothing is opened after the end.
        self._start_lock = threading.Lock()

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    def poll(self) -> list[dict]:
        """The events produced since the last call (never blocks)."""
        with self._lock:
            events = [event for _, event in self._out]
            self._out.clear()
        return events

    def wait(self, timeout: float) -> list[dict]:
        """The next events, waiting up to ``timeout`` seconds for one (call from a thread)."""
        with self._ready:
            if not self._out and not self.ended:
                self._ready.wait(timeout)
        return self.poll()

    def end(self, reason: str = "", *, failed: bool = False) -> Conversation | None:
        """End the conversation once (blocks: workers stopped, files written, usage
        settled); the saved row (None when it ended before it started). Safe from any
        thread; a ``start`` under way in another thread finishes first."""
        return self._end(reason, failed=failed, wait=True)

    def _end(self, reason: str, *, failed: bool, wait: bool) -> Conversation | None:
        raise NotImplementedError

    def _emit(self, event: dict, turn: int = 0) -> None:
        with self._ready:
            self._out.append((turn, event))
            self._ready.notify_all()

    def _end_soon(self, message: str, *, failed: bool) -> None:
        """From a worker: say why, then end and save (``end`` joins the other worker)."""
        self._emit(error_event(message, fatal=True))
        self._end(message, failed=failed, wait=False)

    def _save(self, *, reason: str, failed: bool) -> Conversation:
        with self._lock:
            user = bytes(self._user)
            agent = bytes(self._agent)
            turns = [t for t in self._turns if t.text or t.interrupted]
        return conversation_save(
            self.conversation, user=user, agent=agent, turns=turns, meter=self.meter,
            reason=reason, failed=failed,
        )  # fmt: skip

    def _opened(self, conversation, overrides, dynamic_variables, *, engine: str) -> str:
        """The agent's configuration for this conversation (``config``, ``system_prompt``)
        and its row (``conversation``: made, or the one given moved to ``engine``); the
        first message, filled."""
        agent = self.agent
        version = agent.version
        config = AgentConfig.from_dict(version.config if version else None)
        if overrides:
            config = AgentConfig.from_conversation_config(overrides, base=config)
        self.config = config
        self.system_prompt, first_message = config.filled(dynamic_variables)
        caller = self.caller
        if conversation is None:
            conversation = Conversation.objects.create(
                workspace=agent.workspace,
                agent=agent,
                agent_name=agent.name,
                version=version,
                version_number=version.number if version else 0,
                user=caller.user,
                source=caller.source,
                api_key_id=caller.key_id,
                engine=engine,
                dynamic_variables=dict(dynamic_variables or {}),
                overrides=dict(overrides or {}),
            )
        elif conversation.engine != engine:
            conversation.engine = engine
            conversation.save(update_fields=["engine"])
        self.conversation = conversation
        return first_message
