"""How every websocket of Chorus ends: the close codes it may send, and one ending path.

Daphne closes sockets through autobahn, whose server side accepts only 1000 or a code from
3000 to 4999: any other code (1008, 1011…) raises inside the consumer, which then dies before
``disconnect`` runs. So the codes Chorus sends are:

====  ===================================================================================
1000  normal end: after Stop, or answering the client's own close
4400  the request is wrong (bad session options)
4401  not signed in, or the API key is unknown
4402  a budget, a key's cap or the plan's credits are spent (quota_exceeded)
4403  signed in, but not allowed
4409  the session has already ended
4500  something failed in Chorus
4502  the engine (or the provider behind it) refused or failed
====  ===================================================================================

that is ``4000 +`` the HTTP status of the same refusal (``refusal_code``); the live captions
page does not reconnect on them. A refusal is told first as a message in the socket's own
protocol (``{"type": "error", …}`` on the studio's sockets, ``{"message_type": "auth_error"
| "quota_exceeded" | …, "error"}`` on ``/v1``, as ElevenLabs does), then the socket closes
with its code; bad input gets the message alone and the session goes on. A refusal before
``accept`` is an HTTP 403.

``SocketEnding`` gives a consumer one path to its end. Whatever ends the socket (``close``
from a handler, the client hanging up, a handler that raised), ``ending`` runs once before
the close, so it is where a consumer settles what it received and closes its engine session.
A handler that raises is logged, ``failed`` tells the client and ends the socket with 4500,
and the consumer lives on until the close completes.
"""

import json
import logging

from channels.exceptions import StopConsumer

log = logging.getLogger(__name__)

CLOSE_NORMAL = 1000
CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHENTICATED = 4401
CLOSE_QUOTA = 4402
CLOSE_FORBIDDEN = 4403
CLOSE_ENDED = 4409
CLOSE_FAILED = 4500
CLOSE_ENGINE = 4502


def allowed_code(code: int | None) -> int | None:
    """``code`` if Daphne may send it, else 4500 (a wrong code must not kill the consumer)."""
    if code is None or code == CLOSE_NORMAL or 3000 <= code <= 4999:
        return code
    log.error("websocket close code %s is not allowed on the server side: sent 4500", code)
    return CLOSE_FAILED


def refusal_code(status: int) -> int:
    """The close code of a refusal with this HTTP status."""
    return 4000 + status if 400 <= status <= 599 else CLOSE_FAILED


def json_object(text_data: str | None) -> dict | None:
    """A text frame's JSON object; None for anything else (no text, not JSON, nested too
    deep for the parser, not an object). Never raises: bad input must not end a socket."""
    if not text_data:
        return None
    try:
        message = json.loads(text_data)
    except (ValueError, RecursionError):  # 100,000 nested "[" is a RecursionError
        return None
    return message if isinstance(message, dict) else None


class SocketEnding:
    """Mixin for a Channels websocket consumer (put it first): one path to every end.

    Subclasses put what must happen however the socket ends in ``ending`` (it runs once,
    before the close frame or after the client hung up) and may override ``failed`` to tell
    the client, in their protocol, that something went wrong.
    """

    ended = False

    async def ending(self) -> None:
        """Settle what was received, close the engine's session, leave groups."""

    async def failed(self, exc: Exception) -> None:
        """A handler raised ``exc`` (already logged): tell the client and end."""
        await self.close(code=CLOSE_FAILED)

    async def end_once(self) -> None:
        if self.ended:
            return
        self.ended = True
        try:
            await self.ending()
        except Exception:
            log.exception("%s: ending the socket failed", type(self).__name__)

    async def close(self, code=None, reason=None):
        await self.end_once()
        await super().close(code=allowed_code(code), reason=reason)

    async def websocket_disconnect(self, message):
        await self.end_once()
        await super().websocket_disconnect(message)

    async def dispatch(self, message):
        try:
            await super().dispatch(message)
        except StopConsumer:
            raise
        except Exception as exc:
            log.exception("%s: handling %s failed", type(self).__name__, message.get("type"))
            if message.get("type") == "websocket.disconnect":
                raise StopConsumer() from exc  # gone already: nothing to tell
            try:
                await self.failed(exc)
            except Exception:
                log.exception("%s: ending after a failure failed", type(self).__name__)
                await super().close(code=CLOSE_FAILED)
