"""Personal API keys: create (shown once), authenticate, revoke — every change audited."""

import secrets
import time
from dataclasses import asdict, dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.workspaces.models import EngineSettings, Membership, Role
from apps.workspaces.services import ActionRefused, audit_record

from .models import SCOPES, ApiKey

KEY_PREFIX = "chorus_"
LAST_USED_EVERY = timedelta(minutes=1)  # how often last_used_at is written (not per request)


@dataclass(frozen=True)
class IssuedKey:
    api_key: ApiKey
    raw: str  # shown once, never stored


@transaction.atomic
def api_key_create(
    *,
    workspace,
    user,
    name: str,
    scopes: list[str] | None = None,
    expires_at=None,
    monthly_cap=None,
    ip: str | None = None,
) -> IssuedKey:
    """A new key for ``user`` in ``workspace``; members and above only (viewers cannot call)."""
    membership = Membership.objects.filter(workspace=workspace, user=user).first()
    if membership is None or not membership.has_role(Role.MEMBER):
        raise ActionRefused("Only members (not viewers) can have API keys.")
    name = name.strip()
    if not name:
        raise ActionRefused("A key needs a name.")
    unknown = set(scopes or []) - set(SCOPES)
    if unknown:
        raise ActionRefused(f"Unknown scopes: {', '.join(sorted(unknown))}.")
    raw = KEY_PREFIX + secrets.token_urlsafe(32)
    api_key = ApiKey.objects.create(
        workspace=workspace,
        user=user,
        name=name[:100],
        prefix=raw[: len(KEY_PREFIX) + 6],
        key_hash=ApiKey.hash(raw),
        scopes=sorted(set(scopes or [])),
        expires_at=expires_at,
        monthly_cap=monthly_cap,
    )
    audit_record(
        workspace=workspace,
        actor=user,
        action="api_key.created",
        target=f"{api_key.name} ({api_key.prefix}…)",
        data={"scopes": api_key.scopes, "cap": str(monthly_cap) if monthly_cap else None},
        ip=ip,
    )
    return IssuedKey(api_key=api_key, raw=raw)


@transaction.atomic
def api_key_revoke(*, api_key: ApiKey, actor, ip: str | None = None) -> ApiKey:
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
        audit_record(
            workspace=api_key.workspace,
            actor=actor,
            action="api_key.revoked",
            target=f"{api_key.name} ({api_key.prefix}…)",
            data={"owner": api_key.user.email},
            ip=ip,
        )
    return api_key


class KeyRejected(Exception):
    """Why a request's key cannot be used: (HTTP status, ElevenLabs status code, message)."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


# Keys recently checked, by hash: (valid until, on time.monotonic(); the key as looked up).
# A proxied call then needs no query to know its key; see ``api_key_authenticate``.
_known_keys: dict[str, tuple[float, ApiKey]] = {}
_KNOWN_KEYS_MAX = 10_000


def known_keys_forget(**_signal) -> None:
    """Forget every remembered key (a key, membership, user or engine setting changed)."""
    _known_keys.clear()


def api_key_authenticate(raw: str | None) -> ApiKey:
    """The active key behind ``xi-api-key``, with its workspace, user and membership role.

    Two queries: the key with its workspace, user and the workspace's engine settings (kept
    as ``api_key.engine_row`` for ``engine_for``), then the owner's role in the workspace.
    A key that passed is remembered for ``CHORUS_API_KEY_CACHE_SECONDS`` (default 5) in this
    process, so the calls of a busy script cost no query here. Any change in this process to
    a key, membership, user, workspace or engine setting forgets them all at once (signals,
    see ``apps.py``); a change made in another process takes effect here within that time.
    The key's expiry is checked on every call.
    """
    if not raw:
        raise KeyRejected(401, "needs_authorization", "Missing API key: send it in xi-api-key.")
    key_hash = ApiKey.hash(raw.strip())
    now = timezone.now()
    known = _known_keys.get(key_hash)
    if known is not None and known[0] > time.monotonic():
        api_key = known[1]
    else:
        api_key = _api_key_look_up(key_hash)
        seconds = settings.CHORUS_API_KEY_CACHE_SECONDS
        if seconds > 0:
            if len(_known_keys) >= _KNOWN_KEYS_MAX:
                _known_keys.clear()
            _known_keys[key_hash] = (time.monotonic() + seconds, api_key)
    if api_key.expires_at is not None and api_key.expires_at <= now:
        _known_keys.pop(key_hash, None)
        raise KeyRejected(401, "invalid_api_key", "This API key has expired.")
    if api_key.last_used_at is None or now - api_key.last_used_at > LAST_USED_EVERY:
        api_key.last_used_at = now
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
    return api_key


def _api_key_look_up(key_hash: str) -> ApiKey:
    api_key = (
        ApiKey.objects.select_related("workspace", "user", "workspace__engine_settings")
        .filter(key_hash=key_hash)
        .first()
    )
    if api_key is None:
        raise KeyRejected(401, "invalid_api_key", "Invalid API key.")
    if api_key.revoked_at is not None:
        raise KeyRejected(401, "invalid_api_key", "This API key was revoked.")
    # (A subquery would save this round trip but costs more CPU to compile than it saves.)
    role = (
        Membership.objects.filter(workspace_id=api_key.workspace_id, user_id=api_key.user_id)
        .values_list("role", flat=True)
        .first()
    )
    membership = None
    if role is not None:
        membership = Membership(workspace=api_key.workspace, user=api_key.user, role=role)
    if membership is None or not membership.has_role(Role.MEMBER):
        raise KeyRejected(
            401, "invalid_api_key", "The key's owner is no longer a member of its workspace."
        )
    try:
        api_key.engine_row = api_key.workspace.engine_settings
    except EngineSettings.DoesNotExist:
        api_key.engine_row = None
    api_key.membership = membership
    return api_key


# --- The /v1 API: what a key may call, speech through metering, voices, models, account ---
# (Imports of this section sit here so the key services above stay as they were.)

import calendar  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
from collections.abc import AsyncIterator, Callable  # noqa: E402
from contextlib import ExitStack, contextmanager  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from decimal import Decimal  # noqa: E402

from asgiref.sync import async_to_sync  # noqa: E402

from apps.billing.models import UsageSource  # noqa: E402
from apps.billing.services import (  # noqa: E402
    BudgetExceeded,
    member_usage,
    metered,
    period_start,
    plan_for,
    rate_for,
)
from apps.engines.base import (  # noqa: E402
    EngineError,
    InvalidRequest,
    ModelInfo,
    OutputFormat,
    QuotaExceeded,
    RateLimited,
    TTSRequest,
    Voice,
    VoicePage,
    VoiceQuery,
    VoiceSettings,
)
from apps.history.services import generation_save, kept_together  # noqa: E402
from apps.workspaces.services import engine_for  # noqa: E402

from .asgi import thread_hop  # noqa: E402

log = logging.getLogger(__name__)

SPEECH_CHARACTERS_PER_SECOND = 15  # typical read speech: sizes a stream cut off before its end
ALL_VOICES_PAGES = 50  # GET /v1/voices gathers at most this many pages of 100


class ApiRefused(Exception):
    """A call the API refuses, in ElevenLabs' error shape: HTTP status, code, message.

    ``kind`` is the error ``type`` (authentication_error, rate_limit_error, …); ``param`` the
    request field at fault; ``request_id`` the ledger's id when a reservation was made.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        kind: str = "invalid_request",
        param: str | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message)
        self.status, self.code, self.message, self.kind = status, code, message, kind
        self.param, self.request_id, self.retry_after = param, request_id, retry_after


class ApiInvalid(Exception):
    """A request that does not validate (HTTP 422): FastAPI-style ``[{loc, msg, type}]``."""

    def __init__(self, errors: list[dict], *, request_id: str | None = None):
        super().__init__("; ".join(str(e.get("msg")) for e in errors))
        self.errors, self.request_id = errors, request_id

    @classmethod
    def one(cls, loc: list, msg: str, kind: str = "value_error", **extra) -> "ApiInvalid":
        return cls([{"type": kind, "loc": loc, "msg": msg, **extra}])


def key_engine(api_key: ApiKey):
    """The engine of the key's workspace (its settings row came with the key)."""
    row = getattr(api_key, "engine_row", None)
    if row is None and not hasattr(api_key, "engine_row"):
        return engine_for(api_key.workspace)
    return engine_for(api_key.workspace, row=row)


def api_key_check(*, raw: str | None, scope: str) -> ApiKey:
    """The active key of ``xi-api-key`` if it may use ``scope``; else 401 or 403."""
    try:
        api_key = api_key_authenticate(raw)
    except KeyRejected as exc:
        raise ApiRefused(exc.status, exc.code, exc.message, kind="authentication_error") from exc
    if not api_key.allows(scope):
        raise ApiRefused(
            403,
            "missing_permissions",
            f"The API key you used is missing the permission {scope} ({SCOPES[scope]}) to "
            "execute this operation. A key's scopes are chosen when it is created.",
            kind="authorization_error",
        )
    return api_key


@contextmanager
def engine_errors_as_api(
    *, request_id: str | None = None, voice_status: int = 400, where: str = "body"
):
    """Engine errors as the API reports them (``voice_status``: unknown voice, 400 or 404;
    ``where``: the part of the request, body or query, whose fields were invalid)."""
    try:
        yield
    except InvalidRequest as exc:
        raise _invalid(exc, request_id=request_id, voice_status=voice_status, where=where) from exc
    except QuotaExceeded as exc:  # the provider's quota, not a Chorus budget: say so
        raise ApiRefused(
            429,
            "quota_exceeded",
            f"The workspace's ElevenLabs quota ran out (the provider refused the call): "
            f"{exc.message}",
            kind="rate_limit_error",
            request_id=request_id,
        ) from exc
    except RateLimited as exc:
        raise ApiRefused(
            429,
            "too_many_concurrent_requests",
            exc.message,
            kind="rate_limit_error",
            request_id=request_id,
            retry_after=exc.retry_after,
        ) from exc
    except EngineError as exc:
        raise _refused(exc, request_id=request_id) from exc


def _refused(exc: EngineError, *, request_id: str | None) -> ApiRefused:
    status = exc.status_code if 400 <= exc.status_code < 600 else 500
    if status == 401:  # the workspace's upstream key was refused, not the caller's key
        message = (
            f"The workspace's engine refused its own key ({exc.message}). "
            "An owner can check it under Settings → Engine."
        )
        return ApiRefused(503, exc.code, message, kind="service_unavailable", request_id=request_id)
    kind = {400: "invalid_request", 503: "service_unavailable"}.get(status, "internal_error")
    return ApiRefused(status, exc.code, exc.message, kind=kind, request_id=request_id)


def _invalid(exc: InvalidRequest, *, request_id, voice_status, where) -> Exception:
    fields = exc.fields or {"__all__": [exc.message]}
    if "voice_id" in fields:
        return ApiRefused(
            voice_status,
            "voice_not_found",
            fields["voice_id"][0],
            kind="not_found" if voice_status == 404 else "invalid_request",
            param="voice_id",
            request_id=request_id,
        )
    if "output_format" in fields:
        return ApiRefused(
            400,
            "invalid_output_format",
            fields["output_format"][0],
            kind="validation_error",
            param="output_format",
            request_id=request_id,
        )
    errors = [
        {
            "type": "value_error",
            "loc": [where] if name == "__all__" else [where, name],
            "msg": message,
        }
        for name, messages in fields.items()
        for message in messages
    ]
    return ApiInvalid(errors, request_id=request_id)


# --- Speech ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SpeechInput:
    """A text-to-speech call as the client sent it (validated for types by the view)."""

    voice_id: str
    text: str
    model_id: str = "eleven_multilingual_v2"
    voice_settings: dict | None = None  # only the fields the client set
    output_format: str | None = None
    seed: int | None = None
    language_code: str | None = None
    previous_text: str | None = None
    next_text: str | None = None
    apply_text_normalization: str = "auto"


@dataclass(frozen=True)
class Speech:
    """A finished synthesis: the audio, its timings when asked for, and its ledger row."""

    audio: bytes
    content_type: str
    alignment: object | None
    normalized_alignment: object | None
    request_id: str
    credits: Decimal
    engine_ms: float


def _speech_request(speech: SpeechInput, *, streaming: bool) -> tuple[TTSRequest, OutputFormat]:
    with engine_errors_as_api():
        fmt = OutputFormat.parse(speech.output_format)
    if streaming and fmt.codec == "wav":
        raise ApiRefused(
            400,
            "invalid_output_format",
            f"{fmt.name} cannot be streamed: use pcm_{fmt.sample_rate} (the same samples, "
            "without the WAV header) or a non-streaming endpoint.",
            kind="validation_error",
            param="output_format",
        )
    settings = None
    if speech.voice_settings:
        given = {k: v for k, v in speech.voice_settings.items() if v is not None}
        settings = VoiceSettings(**given)
    request = TTSRequest(
        text=speech.text,
        voice_id=speech.voice_id,
        model_id=speech.model_id,
        voice_settings=settings,
        output_format=fmt.name,
        seed=speech.seed,
        language_code=speech.language_code,
        previous_text=speech.previous_text,
        next_text=speech.next_text,
        apply_text_normalization=speech.apply_text_normalization,
    )
    return request, fmt


@dataclass(frozen=True)
class StudioCaller:
    """A member working in the studio, standing where these services take an API key.

    The voice pages (design, clone, try-it) run the same services as ``/v1``; with this
    caller they are metered as the member's own calls (source ui, no key cap) and say what
    each call was for (``purpose``: a voice, a design, a clone).
    """

    workspace: object
    user: object
    purpose: tuple[str, str] | None = None
    draft: bool = False  # a try-out, not a final render (the approved-voices rule spares it)
    pk = None  # no API key
    monthly_cap = None
    usage_source = UsageSource.UI


def usage_source(caller) -> str:
    """Where a call comes from: ``api`` for a key, ``ui`` for a ``StudioCaller``."""
    return getattr(caller, "usage_source", UsageSource.API)


def api_meter(api_key: ApiKey, engine, *, capability: str, model_id: str, units, voice_id=""):
    """``metered`` for a call of ``api_key``: its member, its cap, source api (or the
    studio member of a ``StudioCaller``, with its purpose).

    No idempotency key is passed: each API call is new, and a caller-given key would cost
    the reservation a lookup of its own.
    """
    return metered(
        workspace=api_key.workspace,
        user=api_key.user,
        capability=capability,
        engine=engine.name,
        model_id=model_id or "",
        units=units,
        source=usage_source(api_key),
        voice_id=voice_id or "",
        api_key_id=api_key.pk,
        api_key_cap=api_key.monthly_cap,
        purpose=getattr(api_key, "purpose", None),
    )


def _speech_meter(api_key: ApiKey, engine, request: TTSRequest):
    return api_meter(
        api_key,
        engine,
        capability="tts",
        model_id=request.model_id,
        units=len(request.text),
        voice_id=request.voice_id,
    )


def _stored_voice_apply(api_key: ApiKey, engine, request: TTSRequest, speech: SpeechInput):
    """The workspace's recipe and stored settings of the voice (see ``services_media``)."""
    from .services_media import speech_voice_apply  # services_media imports this module

    speech_voice_apply(
        workspace=api_key.workspace,
        engine=engine,
        request=request,
        given=speech.voice_settings,
        final=not getattr(api_key, "draft", False),
    )


def _budget_refused(exc: BudgetExceeded) -> ApiRefused:
    return ApiRefused(429, "quota_exceeded", str(exc), kind="rate_limit_error")


def api_speech(*, api_key: ApiKey, speech: SpeechInput, with_timestamps: bool = False) -> Speech:
    """Speak ``speech`` with the workspace's engine, metered as the key's member (source api).

    A budget or cap that refuses it raises 429 ``quota_exceeded`` before anything is
    reserved; an engine error is refunded and raised as the API reports it.
    """
    request, fmt = _speech_request(speech, streaming=False)
    with engine_errors_as_api():
        engine = key_engine(api_key)
    _stored_voice_apply(api_key, engine, request, speech)
    event = None
    try:
        with _speech_meter(api_key, engine, request) as meter:
            event = meter.event
            with engine_errors_as_api(request_id=event.request_id):
                started = time.perf_counter()
                result = engine.tts(request, with_timestamps=with_timestamps)
                engine_ms = (time.perf_counter() - started) * 1000
            # Kept and settled together, before the client gets it: a client that times out
            # loses nothing it paid for.
            with kept_together() as saved:
                saved.append(
                    generation_save(
                        workspace=api_key.workspace,
                        user=api_key.user,
                        kind="tts",
                        engine=engine.name,
                        audio=result.audio,
                        content_type=result.content_type or fmt.content_type,
                        recipe=speech_recipe(request, streamed=False),
                        source=usage_source(api_key),
                        api_key_id=api_key.pk,
                        model_id=request.model_id,
                        voice_id=request.voice_id,
                        text=request.text,
                        duration_seconds=audio_seconds(fmt, len(result.audio)),
                        usage_event=meter.event,
                    )
                )
                event = meter.settle(units=result.characters, info=result.info)
    except BudgetExceeded as exc:
        raise _budget_refused(exc) from exc
    return Speech(
        audio=result.audio,
        content_type=result.content_type or fmt.content_type,
        alignment=result.alignment,
        normalized_alignment=result.normalized_alignment,
        request_id=event.request_id,
        credits=event.credits or Decimal(0),
        engine_ms=engine_ms,
    )


@dataclass
class PendingStream:
    """A streamed synthesis reserved and ready to open (see ``api_speech_stream_prepare``)."""

    api_key: ApiKey
    engine: object
    request: TTSRequest
    fmt: OutputFormat
    meter: object
    exits: ExitStack  # holds the reservation: closing it refunds what was not settled
    encode: Callable[[object], bytes]
    with_timestamps: bool

    @property
    def streams_async(self) -> bool:
        return bool(getattr(self.engine, "streams_async", False))

    def _served(self, stream, *, engine_ms: float, is_async: bool) -> "SpeechStream":
        return SpeechStream(
            stream=stream,
            meter=self.meter,
            exits=self.exits,
            characters=len(self.request.text),
            fmt=self.fmt,
            encode=self.encode,
            engine_ms=engine_ms,
            is_async=is_async,
            keep=self._keep,
        )

    def _keep(self, audio: bytes, *, complete: bool, event) -> None:
        speech_keep(self, audio, complete=complete, event=event)

    def _release(self, exc: BaseException) -> None:
        """Refund the reservation, noting why the stream could not be opened."""
        self.exits.__exit__(type(exc), exc, exc.__traceback__)

    def open(self) -> "SpeechStream":
        """Open the engine stream here (sync); on failure the reservation is refunded."""
        try:
            with engine_errors_as_api(request_id=self.meter.event.request_id):
                started = time.perf_counter()
                stream = self.engine.tts_stream(self.request, with_timestamps=self.with_timestamps)
                engine_ms = (time.perf_counter() - started) * 1000
        except BaseException as exc:
            self._release(exc)
            raise
        return self._served(stream, engine_ms=engine_ms, is_async=False)

    async def open_async(self) -> "SpeechStream":
        """Open the engine's async stream on the event loop (``streams_async`` engines)."""
        try:
            with engine_errors_as_api(request_id=self.meter.event.request_id):
                started = time.perf_counter()
                stream = await self.engine.tts_stream_async(
                    self.request, with_timestamps=self.with_timestamps
                )
                engine_ms = (time.perf_counter() - started) * 1000
        except BaseException as exc:
            await thread_hop(self._release)(exc)
            raise
        return self._served(stream, engine_ms=engine_ms, is_async=True)


def api_speech_stream_prepare(
    *,
    api_key: ApiKey,
    speech: SpeechInput,
    encode: Callable[[object], bytes],
    with_timestamps: bool = False,
) -> PendingStream:
    """Check and reserve a streamed synthesis (429 ``quota_exceeded`` when a budget refuses)."""
    request, fmt = _speech_request(speech, streaming=True)
    with engine_errors_as_api():
        engine = key_engine(api_key)
    _stored_voice_apply(api_key, engine, request, speech)
    try:
        with ExitStack() as exits:
            meter = exits.enter_context(_speech_meter(api_key, engine, request))
            return PendingStream(
                api_key=api_key,
                engine=engine,
                request=request,
                fmt=fmt,
                meter=meter,
                exits=exits.pop_all(),  # the stream settles and closes the reservation
                encode=encode,
                with_timestamps=with_timestamps,
            )
    except BudgetExceeded as exc:
        raise _budget_refused(exc) from exc


def api_speech_stream(
    *,
    api_key: ApiKey,
    speech: SpeechInput,
    encode: Callable[[object], bytes],
    with_timestamps: bool = False,
) -> "SpeechStream":
    """Start a metered streamed synthesis; ``encode`` turns each engine chunk into bytes.

    The reservation (checked against every budget) is made and the engine stream opened
    before this returns, so refusals and bad input are proper error responses; what the
    stream costs is settled when it ends (see ``SpeechStream``).
    """
    return api_speech_stream_prepare(
        api_key=api_key, speech=speech, encode=encode, with_timestamps=with_timestamps
    ).open()


def speech_keep(pending, audio: bytes, *, complete: bool, event) -> None:
    """Keep streamed speech as a ``Generation`` (what was delivered, with its recipe)."""
    if not audio:
        return
    request = pending.request
    try:
        generation_save(
            workspace=pending.api_key.workspace,
            user=pending.api_key.user,
            kind="tts",
            engine=pending.engine.name,
            audio=audio,
            content_type=pending.fmt.content_type,
            recipe=speech_recipe(request, streamed=True),
            source=UsageSource.API,
            api_key_id=pending.api_key.pk,
            model_id=request.model_id,
            voice_id=request.voice_id,
            text=request.text,
            duration_seconds=audio_seconds(pending.fmt, len(audio)),
            usage_event=event,
            complete=complete,
        )
    except Exception:  # the client has its audio already; losing the copy is logged
        log.exception("keeping the streamed speech of %s failed", event.request_id)


def speech_recipe(request: TTSRequest, *, streamed: bool) -> dict:
    """Every parameter of a synthesis, as kept with its ``Generation``."""
    recipe = {
        "text": request.text,
        "voice_id": request.voice_id,
        "model_id": request.model_id,
        "output_format": request.output_format,
        "seed": request.seed,
        "language_code": request.language_code,
        "previous_text": request.previous_text,
        "next_text": request.next_text,
        "apply_text_normalization": request.apply_text_normalization,
        "voice_settings": (
            asdict(request.voice_settings) if request.voice_settings is not None else None
        ),
        "streamed": streamed,
    }
    return recipe


class SpeechStream:
    """An engine stream served to an HTTP client, settled exactly once however it ends.

    Iterated asynchronously (ASGI). An async engine stream (the ElevenLabs engine) is read
    on the event loop itself; a sync one (the local engine, which computes the audio) is
    pulled a chunk at a time in a hop to a thread (``asgi.thread_hop``), so a synthesis never
    blocks the loop; the hops follow one another, so the generator is never driven by two
    threads at once. When the response ends —
    complete, an engine error midway, or a client that went away — the engine stream is
    closed and the reservation settled with the delivered share of the characters (or
    refunded when no audio went out), and the delivered audio is kept as a ``Generation``.
    That runs from the iterator's ``finally`` (so before the response's last message) and,
    for a disconnect that cancels the response while a chunk is being sent, from Django's
    ``response.close()``; a second call does nothing. ``after_close`` callables (the
    member's concurrency slot) run at the end of ``close``, in the same hop.

    The delivered share: a stream that ended is the whole text; one cut short counts the
    characters of the alignments already sent when chunks carry them, else the characters
    the audio sent would hold at ``SPEECH_CHARACTERS_PER_SECOND`` (never more than the text).
    A chunk counts as delivered once the server has taken it (the iterator was resumed).
    """

    def __init__(
        self,
        *,
        stream,
        meter,
        exits: ExitStack,
        characters: int,
        fmt: OutputFormat,
        encode: Callable[[object], bytes],
        engine_ms: float,
        is_async: bool = False,
        keep: Callable | None = None,
    ):
        self._stream = stream
        self._is_async = is_async
        self._chunks = stream if is_async else iter(stream)
        self._meter = meter
        self._exits = exits
        self._characters = characters
        self._fmt = fmt
        self._encode = encode
        self._keep = keep
        self._audio: list[bytes] = []
        self.engine_ms = engine_ms
        self.request_id: str = meter.event.request_id
        self.estimated_credits: Decimal = meter.event.estimated_credits
        self.content_type = fmt.content_type
        self.ended = False  # the engine yielded everything
        self.closed = False
        self.delivered_bytes = 0
        self.delivered_characters = 0  # from chunk alignments, when present
        self.after_close: list[Callable[[], None]] = []

    def _next(self):
        try:
            return next(self._chunks)
        except StopIteration:
            self.ended = True
        except EngineError as exc:
            log.warning("stream %s broke off: %s", self.request_id, exc.message)
        return None

    async def _anext(self):
        try:
            return await self._chunks.__anext__()
        except StopAsyncIteration:
            self.ended = True
        except EngineError as exc:
            log.warning("stream %s broke off: %s", self.request_id, exc.message)
        return None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            while True:
                if self._is_async:
                    chunk = await self._anext()
                else:
                    chunk = await thread_hop(self._next)()
                if chunk is None:
                    break
                yield self._encode(chunk)
                self.delivered_bytes += len(chunk.audio)
                self._audio.append(chunk.audio)
                if chunk.alignment is not None:
                    self.delivered_characters += len(chunk.alignment.characters)
        finally:
            # Settled before the response's last message: a client that has the whole
            # stream finds it in the ledger and its history.
            if not self.closed:
                if self._is_async and not self.ended:
                    try:
                        await self._stream.aclose()
                    except Exception:
                        log.exception("closing the engine stream of %s failed", self.request_id)
                await thread_hop(self.close)()

    def delivered_units(self) -> int:
        if self.ended:
            return self._characters
        if self.delivered_characters:
            return min(self._characters, self.delivered_characters)
        seconds = audio_seconds(self._fmt, self.delivered_bytes)
        return min(self._characters, math.ceil(seconds * SPEECH_CHARACTERS_PER_SECOND))

    def close(self) -> None:
        """Stop the synthesis if it still runs, then settle (or refund) the reservation."""
        if self.closed:
            return
        self.closed = True
        try:
            if not self.ended and not self._is_async:
                self._stream.close()
            elif not self.ended and not self._stream.closed:
                async_to_sync(self._stream.aclose)()
        except Exception:
            log.exception("closing the engine stream of %s failed", self.request_id)
        try:
            if self.delivered_bytes or self.delivered_characters:
                event = self._meter.settle(units=self.delivered_units(), info=self._stream.info)
                if self._keep is not None:
                    self._keep(b"".join(self._audio), complete=self.ended, event=event)
        finally:
            try:
                self._exits.close()  # metering: refunds what was not settled
            finally:
                for after in self.after_close:
                    after()


def audio_seconds(fmt: OutputFormat, size: int) -> float:
    """How long ``size`` bytes of audio in ``fmt`` play (headers and framing ignored)."""
    if fmt.codec in ("pcm", "wav"):
        return size / (2 * fmt.sample_rate)
    if fmt.codec in ("ulaw", "alaw"):
        return size / fmt.sample_rate
    return size * 8 / ((fmt.bitrate_kbps or 128) * 1000)


# --- Voices and models --------------------------------------------------------------------


# The engines that keep no voices of their own: the voices a workspace made through the API
# (clones, saved designs) live in ``ApiVoice`` and are listed with the engine's. An upstream
# engine (ElevenLabs) lists the voices made there itself.
ENGINES_LISTING_API_VOICES = frozenset({"local"})


def _voices_made(api_key: ApiKey, engine, **only) -> list[Voice]:
    """The workspace's voices made through the API on ``engine`` (oldest first; ``only``
    filters the rows), with the workspace's stored settings; empty for engines that list
    such voices themselves."""
    if engine.name not in ENGINES_LISTING_API_VOICES:
        return []
    from .models import ApiVoice, VoiceSettingsRecord
    from .services_media import voice_of_row

    rows = ApiVoice.objects.filter(workspace=api_key.workspace, engine=engine.name, **only)
    rows = [row for row in rows.order_by("created_at", "id") if row.recipe is not None]
    records = {
        record.voice_id: record
        for record in VoiceSettingsRecord.objects.filter(
            workspace=api_key.workspace, voice_id__in=[row.voice_id for row in rows]
        )
    }
    return [voice_of_row(row, record=records.get(row.voice_id)) for row in rows]


def _voice_matches(voice: Voice, search: str | None, category: str | None) -> bool:
    """The local engine's filter: ``search`` in the name, description or a label's value."""
    if category and voice.category != category:
        return False
    if not search:
        return True
    needle = search.lower()
    return (
        needle in voice.name.lower()
        or needle in (voice.description or "").lower()
        or any(needle in str(value).lower() for value in (voice.labels or {}).values())
    )


def _engine_voices(engine, **filters) -> list[Voice]:
    """Every voice of the engine that matches ``filters`` (pages of 100, at most
    ``ALL_VOICES_PAGES`` of them)."""
    voices: list[Voice] = []
    token = None
    for _ in range(ALL_VOICES_PAGES):
        page = engine.voices(VoiceQuery(page_size=100, next_page_token=token, **filters))
        voices.extend(page.voices)
        token = page.next_page_token
        if not page.has_more or not token:
            break
    return voices


def _offset(token: str | None) -> int:
    """The position a page token stands for (the local engine's tokens: an offset)."""
    try:
        start = int(token or 0)
    except ValueError:
        start = -1
    if start < 0:
        raise InvalidRequest.for_field("next_page_token", "Invalid page token.")
    return start


def api_voices_page(
    *,
    api_key: ApiKey,
    search: str | None = None,
    page_size: int = 10,
    next_page_token: str | None = None,
    category: str | None = None,
    sort: str | None = None,
    sort_direction: str | None = None,
) -> VoicePage:
    """One page of the workspace's voices (``GET /v2/voices``).

    On an engine that keeps no voices (local), the engine's voices and the workspace's
    voices made through the API are filtered, sorted and paged here as one list (the
    engine's list is small), with the engine's token format (an offset): without ``sort``,
    the engine's voices in its order, then the workspace's, oldest first.
    """
    query = VoiceQuery(
        search=search,
        page_size=page_size,
        next_page_token=next_page_token,
        category=category,
        sort=sort,
        sort_direction=sort_direction,
    )
    with engine_errors_as_api(where="query"):
        engine = key_engine(api_key)
        if engine.name not in ENGINES_LISTING_API_VOICES:
            return engine.voices(query)
        start = _offset(next_page_token)
        voices = _engine_voices(engine, search=search, category=category)
    made = _voices_made(api_key, engine)
    voices += [v for v in made if _voice_matches(v, search, category)]
    descending = sort_direction == "desc"
    if sort == "name":
        voices.sort(key=lambda v: v.name.lower(), reverse=descending)
    elif sort == "created_at_unix":
        voices.sort(key=lambda v: v.created_at_unix or 0, reverse=descending)
    size = max(1, min(100, page_size or 10))
    more = start + size < len(voices)
    return VoicePage(
        voices=voices[start : start + size],
        has_more=more,
        total_count=len(voices),
        next_page_token=str(start + size) if more else None,
    )


def api_voices_all(*, api_key: ApiKey) -> list[Voice]:
    """Every voice of the workspace (``GET /v1/voices`` is not paginated): the engine's,
    then, on an engine that keeps no voices (local), those made through the API."""
    with engine_errors_as_api():
        engine = key_engine(api_key)
        voices = _engine_voices(engine)
    return voices + _voices_made(api_key, engine)


def api_voice(*, api_key: ApiKey, voice_id: str) -> Voice:
    """One voice (the engine's, or one the workspace made through the API on an engine that
    keeps no voices); an unknown id is a 404 ``voice_not_found``."""
    with engine_errors_as_api(voice_status=404):
        engine = key_engine(api_key)
        for voice in _voices_made(api_key, engine, voice_id=voice_id):
            return voice
        return engine.voice(voice_id)


def api_models(*, api_key: ApiKey) -> list[tuple[ModelInfo, Decimal]]:
    """The engine's models, each with the credits per character Chorus charges for it."""
    with engine_errors_as_api():
        engine = key_engine(api_key)
        models = engine.models()
    return [
        (
            model,
            rate_for(api_key.workspace, "tts", model.model_id, engine.name).credits_per_unit,
        )
        for model in models
    ]


# --- The account --------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyAccount:
    """The subscription a personal key sees: its member's credits, not the whole team's."""

    api_key: ApiKey
    tier: str
    credits_used: int
    credit_limit: int
    next_reset_unix: int | None
    currency: str


def _month_after(start: datetime) -> datetime:
    month = start.month % 12 + 1
    year = start.year + (start.month == 12)
    day = min(start.day, calendar.monthrange(year, month)[1])
    return start.replace(year=year, month=month, day=day)


def api_account(*, api_key: ApiKey) -> KeyAccount:
    """What ``/v1/user/subscription`` tells a key: its member's budget for this period.

    - ``character_limit``: the member's budget in credits; without a budget, the
      workspace's own cap per period if one is set, else the plan's credit limit
      (0 there means no limit: the virtual plan of the local engine, which is free).
    - ``character_count``: the credits the member has used this period (every source:
      studio, API and jobs), rounded up to whole credits.
    - ``tier``: the workspace plan's tier; ``next_character_count_reset_unix``: when the
      next budget period starts (calendar month, or the plan's cycle).
    """
    workspace = api_key.workspace
    plan = plan_for(workspace)
    usage = member_usage(workspace=workspace, user=api_key.user)
    if usage.budget is not None:
        limit = usage.budget.limit_credits
    elif plan.workspace_cap is not None:
        limit = plan.workspace_cap
    else:
        limit = Decimal(plan.credit_limit)
    next_reset = _month_after(period_start(plan))
    return KeyAccount(
        api_key=api_key,
        tier=plan.tier,
        credits_used=math.ceil(usage.used),
        credit_limit=int(limit),
        next_reset_unix=int(next_reset.astimezone(UTC).timestamp()),
        currency=plan.currency or "usd",
    )
