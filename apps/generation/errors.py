"""The core's refusals, in the shape the ElevenLabs API reports them (status, code,
message): the gateway renders them as they are, the studio shows their message.

``engine_errors_as_api`` turns an engine's typed errors into them.
"""

from contextlib import contextmanager

from apps.billing.services import BudgetExceeded
from apps.engines.base import EngineError, InvalidRequest, QuotaExceeded, RateLimited


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


def budget_refused(exc: BudgetExceeded) -> ApiRefused:
    return ApiRefused(429, "quota_exceeded", str(exc), kind="rate_limit_error")
