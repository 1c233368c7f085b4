"""What a local-engine voice agent thinks with: one streaming chat call, two backends.

- With ``CHORUS_AGENT_LLM_URL`` set: an OpenAI-compatible endpoint (llama.cpp's server,
  Ollama, vLLM, a hosted one), ``POST {url}/chat/completions`` with ``stream: true``, read as
  server-sent events. Bearer ``CHORUS_AGENT_LLM_KEY`` when set; no byte for
  ``CHORUS_AGENT_LLM_TIMEOUT_SECONDS`` is a timeout. The model sent is the agent's LLM when
  the endpoint serves it (``CHORUS_AGENT_LLM_MODELS``), else the first model listed there.
- Without it: the offline SmolLM2-135M model (``offline_llm``), in this process.

Either way the caller gets text deltas as they come and, last, the token counts the
conversation is metered with. Every failure is one ``LLMError`` whose message a person can
read (what failed, where, what to check); it never contains the key.

``ChatSession`` is one conversation's LLM: on the offline model it keeps the KV cache of what
was computed, so each turn only prefills what is new (the system prompt and the earlier turns
are reused). ``chat_stream`` is a one-off call.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx
from django.conf import settings

from .config import LOCAL_LLM

STOP_STRINGS_MAX = 4  # what the OpenAI API accepts
ERROR_DETAIL_MAX = 300  # characters of a server's error message shown


class LLMError(Exception):
    """The LLM could not answer; ``str(error)`` says why, for a person (never the key)."""


@dataclass(frozen=True)
class LLMChunk:
    """A piece of the answer (``text``), or the last chunk (``done``) with the token counts."""

    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    done: bool = False


# --- Which backend ------------------------------------------------------------------------


def endpoint_url() -> str | None:
    """The configured endpoint's base URL (without a trailing ``/chat/completions``), or None.

    Only http and https are used; anything else (``file:``, ``ftp:``, a bare host) is refused
    with ``LLMError`` rather than handed to httpx.
    """
    raw = (getattr(settings, "CHORUS_AGENT_LLM_URL", "") or "").strip()
    if not raw:
        return None
    parts = urlsplit(raw)
    if parts.scheme.lower() not in {"http", "https"} or not parts.hostname:
        raise LLMError(
            "CHORUS_AGENT_LLM_URL must be an http:// or https:// URL such as "
            f"http://127.0.0.1:11434/v1 (its scheme is {parts.scheme or 'missing'!r})."
        )
    path = parts.path.rstrip("/").removesuffix("/chat/completions")
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def _completions_url(url: str) -> str:
    """``{url}/chat/completions``, keeping the URL's query (Azure's ``api-version``) last."""
    parts = urlsplit(url)
    path = f"{parts.path}/chat/completions"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def _shown_url(url: str) -> str:
    """The URL as pages and messages show it: no user name, password or query."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def endpoint_model(llm: str) -> str:
    """The model name sent to the endpoint for an agent whose LLM is ``llm``.

    The agent's own when the endpoint lists it, else the first listed one; with none listed,
    the agent's (an endpoint that serves one model, like llama.cpp's server, ignores it).
    """
    served = list(getattr(settings, "CHORUS_AGENT_LLM_MODELS", []) or [])
    if llm in served or not served:
        return llm
    return served[0]


def llm_describe(llm: str = LOCAL_LLM) -> str:
    """What will answer for an agent whose LLM is ``llm``, for the agent page."""
    from . import offline_llm

    try:
        url = endpoint_url()
    except LLMError as exc:
        return f"nothing: {exc}"
    if url:
        return f"{endpoint_model(llm)} at {_shown_url(url)}"
    if not offline_llm.installed():
        return f"nothing: the offline {offline_llm.MODEL_NAME} model is not installed"
    return f"the offline {offline_llm.MODEL_NAME} model"


# --- The calls ----------------------------------------------------------------------------


class ChatSession:
    """One conversation's LLM, used for one turn at a time.

    On the offline model it owns a KV cache that outlives the turn: the next prompt, which
    starts with the same system prompt and earlier turns, reuses it. An endpoint keeps its
    own prompt cache (llama.cpp and vLLM do), so there the session holds nothing.
    """

    def __init__(self):
        self._offline = None
        self.cached_tokens = 0  # prompt tokens the last offline turn reused

    def stream(
        self,
        messages: list[dict],
        *,
        model: str,
        temperature: float,
        max_tokens: int,
        stop: list[str] | None = None,
        seed: int | None = None,
    ) -> Iterator[LLMChunk]:
        """Text deltas of the answer as they are made, then a ``done`` chunk with the counts.

        ``model`` is the agent's LLM name; ``stop`` strings end the answer (not included);
        ``seed`` makes sampling repeatable where the backend supports it. Raises ``LLMError``.
        """
        url = endpoint_url()
        options = {
            "temperature": float(temperature),
            "max_tokens": max(1, int(max_tokens)),
            "stop": [s for s in (stop or []) if s][:STOP_STRINGS_MAX],
            "seed": seed,
        }
        if url:
            yield from _endpoint_stream(url, messages, endpoint_model(model), **options)
        else:
            yield from self._offline_stream(messages, **options)

    def _offline_stream(self, messages: list[dict], **options) -> Iterator[LLMChunk]:
        from . import offline_llm

        try:
            if self._offline is None:
                self._offline = offline_llm.Session(offline_llm.model())
            for piece in self._offline.generate(messages, **options):
                if isinstance(piece, offline_llm.Usage):
                    self.cached_tokens = piece.cached_tokens
                    yield LLMChunk(
                        prompt_tokens=piece.prompt_tokens,
                        completion_tokens=piece.completion_tokens,
                        done=True,
                    )
                else:
                    yield LLMChunk(text=piece)
        except offline_llm.ModelMissing as exc:
            raise LLMError(f"The offline model is not installed: {exc}.") from None
        except offline_llm.ContextFull as exc:
            raise LLMError(f"The conversation is too long for the offline model: {exc}.") from None


def chat_stream(
    messages: list[dict],
    *,
    model: str,
    temperature: float,
    max_tokens: int,
    stop: list[str] | None = None,
    seed: int | None = None,
) -> Iterator[LLMChunk]:
    """One answer to ``messages`` (``[{"role": ..., "content": ...}]``), streamed; see
    ``ChatSession.stream``. A conversation should keep a ``ChatSession`` instead."""
    return ChatSession().stream(
        messages,
        model=model,
        temperature=temperature,
        max_tokens=max_tokens,
        stop=stop,
        seed=seed,
    )


# --- The OpenAI-compatible endpoint -------------------------------------------------------

_client_lock = threading.Lock()
_clients: list[httpx.Client] = []


def _client() -> httpx.Client:
    """The process's HTTP client: kept-alive connections spare each turn a new handshake.

    No proxy or .netrc from the environment: the administrator's URL is used as written.
    """
    with _client_lock:
        if not _clients:
            _clients.append(httpx.Client(trust_env=False, follow_redirects=False))
        return _clients[0]


def _forget_client() -> None:
    """After a fork: the parent's connections and lock are not the child's to use."""
    global _client_lock
    _client_lock = threading.Lock()
    _clients.clear()


os.register_at_fork(after_in_child=_forget_client)


def _endpoint_stream(
    url: str,
    messages: list[dict],
    model: str,
    *,
    temperature: float,
    max_tokens: int,
    stop: list[str],
    seed: int | None,
) -> Iterator[LLMChunk]:
    where = _shown_url(url)
    body = {
        "model": model,
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": temperature,
        "max_tokens": max_tokens,
    }
    if stop:
        body["stop"] = stop
    if seed is not None:
        body["seed"] = seed
    headers = {"Accept": "text/event-stream"}
    key = getattr(settings, "CHORUS_AGENT_LLM_KEY", "") or ""
    if key:
        headers["Authorization"] = f"Bearer {key}"
    seconds = float(settings.CHORUS_AGENT_LLM_TIMEOUT_SECONDS)
    try:
        with _client().stream(
            "POST",
            _completions_url(url),
            json=body,
            headers=headers,
            timeout=httpx.Timeout(seconds),
        ) as response:
            if response.status_code != 200:
                response.read()
                raise LLMError(_status_message(response, where, model, key))
            content_type = response.headers.get("content-type", "")
            if content_type.startswith("application/json"):
                # A server that ignores ``stream`` answers with the whole completion.
                yield from _whole_answer(response.read(), where, messages, key)
            else:
                yield from _events(response.iter_lines(), where, messages, key)
    except httpx.TimeoutException:
        raise LLMError(
            f"The LLM at {where} did not answer within {seconds:g} s "
            "(CHORUS_AGENT_LLM_TIMEOUT_SECONDS)."
        ) from None
    except httpx.HTTPError as exc:
        reason = _redacted(str(exc) or type(exc).__name__, key)
        raise LLMError(f"The LLM at {where} could not be reached or broke off: {reason}.") from None


def _redacted(text: str, key: str) -> str:
    text = text.replace(key, "[key]") if key else text
    text = " ".join(text.split())
    return text[:ERROR_DETAIL_MAX] + ("…" if len(text) > ERROR_DETAIL_MAX else "")


def _status_message(response: httpx.Response, where: str, model: str, key: str) -> str:
    """What a refusal (3xx, 4xx, 5xx) means, with the server's own message when it sent one."""
    status = response.status_code
    detail = _error_detail(response)
    said = f": {_redacted(detail, key)}" if detail else ""
    if status in (401, 403):
        hint = " Check CHORUS_AGENT_LLM_KEY."
    elif status == 404:
        hint = f" Check CHORUS_AGENT_LLM_URL and that it serves the model {model!r}."
    elif status >= 500:
        hint = " The LLM server failed; see its log."
    elif 300 <= status < 400:
        hint = " Set CHORUS_AGENT_LLM_URL to where it redirects."
    else:
        hint = ""
    return f"The LLM at {where} answered {status} {response.reason_phrase}{said}.{hint}"


def _error_detail(response: httpx.Response) -> str:
    """The message of an OpenAI-style error body (``{"error": {"message": ...}}``) or its text."""
    text = response.text.strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or error)
    if error:
        return str(error)
    return text


def _events(lines: Iterator[str], where: str, messages: list[dict], key: str):
    """The answer from a server-sent-event stream of ``chat.completion.chunk`` objects.

    Ends at ``data: [DONE]``. A stream that ends before it (and before any finish reason)
    was cut; a line that is not SSE, or data that is not a chunk, is a malformed stream.
    """
    text: list[str] = []
    usage: dict | None = None
    finished = False
    for line in lines:
        if not line or line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if field in {"event", "id", "retry"}:
            continue
        if field != "data":
            raise LLMError(f"The LLM at {where} sent a malformed stream: {_redacted(line, key)!r}")
        value = value.removeprefix(" ")
        if value.strip() == "[DONE]":
            finished = True
            break
        chunk = _chunk(value, where, key)
        usage = chunk.get("usage") or usage
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            content = delta.get("content") if isinstance(delta, dict) else None
            if isinstance(content, str) and content:
                text.append(content)
                yield LLMChunk(text=content)
            finished = finished or bool(choice.get("finish_reason"))
    if not finished:
        raise LLMError(f"The LLM at {where} stopped in the middle of its answer.")
    yield _counts(usage, messages, "".join(text))


def _chunk(value: str, where: str, key: str) -> dict:
    try:
        chunk = json.loads(value)
    except ValueError:
        chunk = None
    if not isinstance(chunk, dict):
        raise LLMError(f"The LLM at {where} sent a malformed stream: {_redacted(value, key)!r}")
    if chunk.get("error"):
        error = chunk["error"]
        message = error.get("message") if isinstance(error, dict) else error
        raise LLMError(f"The LLM at {where} failed mid-answer: {_redacted(str(message), key)}")
    return chunk


def _whole_answer(raw: bytes, where: str, messages: list[dict], key: str):
    """The answer of a non-streamed ``chat.completion`` body, as one delta."""
    try:
        data = json.loads(raw)
        content = data["choices"][0]["message"]["content"] or ""
    except (ValueError, KeyError, IndexError, TypeError):
        shown = _redacted(raw.decode("utf-8", "replace"), key)
        raise LLMError(
            f"The LLM at {where} sent an answer that is not a chat completion: {shown!r}"
        ) from None
    if content:
        yield LLMChunk(text=content)
    yield _counts(data.get("usage"), messages, content)


def _counts(usage, messages: list[dict], answer: str) -> LLMChunk:
    """The final chunk: the server's counts, or four characters a token when it sent none."""
    usage = usage if isinstance(usage, dict) else {}

    def estimate(text: str) -> int:
        return math.ceil(len(text) / 4)

    prompt = usage.get("prompt_tokens")
    completion = usage.get("completion_tokens")
    if not isinstance(prompt, int):
        prompt = sum(estimate(str(m.get("content", ""))) + 4 for m in messages)
    if not isinstance(completion, int):
        completion = estimate(answer)
    return LLMChunk(prompt_tokens=prompt, completion_tokens=completion, done=True)
