"""The ASGI handler of the ``/v1`` and ``/v2`` API: Django without the browser middleware.

API calls authenticate with ``xi-api-key`` and use no session, cookie, CSRF token, messages
or htmx; the site's middleware would only add work (and, being sync, thread hops) to every
call. This handler resolves the same URLconf and runs the same views with an empty
middleware chain, async from the server to the view.

Views marked ``lean`` (the streaming text-to-speech views, see ``api.api_view``) go one step
further. Django's handler gives every request a thread of its own (``ThreadSensitiveContext``)
and sends ``request_started`` through it: a new thread and a hop to it before the view runs,
which cost more CPU than everything else a proxied stream does. A lean view does its own
database work in hops to the shared executor, closing (giving back to the pool) the connection
at the end of each, so it needs neither the thread nor the signal's connection cleanup. Its
response is sent as Django sends it, raced against the client's disconnect the same way, and
closed also when sending failed or the client left: on the loop when a stream already
settled in its own hop (see ``services.SpeechStream``), else in a hop to the shared executor.
"""

import asyncio
import contextlib

from asgiref.sync import sync_to_async
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.exception import convert_exception_to_response
from django.urls import Resolver404, get_resolver

from apps.generation.threads import lean, thread_hop  # noqa: F401  (views hop with it)

API_PREFIXES = ("/v1/", "/v2/")

# (``thread_hop``, the hop a lean view's database work takes, is the core's: ``threads``.)


class ApiASGIHandler(ASGIHandler):
    def load_middleware(self, is_async=False):
        self._view_middleware = []
        self._template_response_middleware = []
        self._exception_middleware = []
        get_response = self._get_response_async if is_async else self._get_response
        self._middleware_chain = convert_exception_to_response(get_response)

    async def __call__(self, scope, receive, send):
        match = lean_match(scope)
        if match is None:
            return await super().__call__(scope, receive, send)
        await self.handle_lean(match, scope, receive, send)

    async def handle_lean(self, match, scope, receive, send):
        lean.set(True)  # (this task's context, copied into the tasks it starts)
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        made = []  # the response, once the view has one: closed however the sending ends
        try:
            request, response = self.create_request(scope, body_file)
            if request is not None:
                request.resolver_match = match
            else:
                made.append(response)
            served = asyncio.create_task(self._respond(match, request, made, send))
            disconnect = asyncio.create_task(self.listen_for_disconnect(receive))
            try:
                await asyncio.wait((served, disconnect), return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (served, disconnect):  # the client went away: stop the view
                    task.cancel()  # or the stream; (a finished task ignores this)
                for task in (served, disconnect):
                    with contextlib.suppress(asyncio.CancelledError, RequestAborted):
                        await task
        finally:
            try:
                if made:
                    await self._close(made[0])
            finally:
                body_file.close()

    async def _close(self, response):
        """Close the response: here when nothing is left that blocks, else in a thread.

        A speech stream that settled (and gave its concurrency slot back) in its own hop
        leaves only the request's files and ``request_finished``, which finds no database
        connection on this thread: no hop needed.
        """
        stream = getattr(response, "chorus_stream", None)
        if stream is not None and stream.closed:
            response.close()
        else:
            await sync_to_async(response.close, thread_sensitive=False)()

    async def _respond(self, match, request, made: list, send) -> None:
        if not made:
            response = await match.func(request, *match.args, **match.kwargs)
            response._handler_class = self.__class__
            made.append(response)
        await self.send_response(made[0], send)


def lean_match(scope):
    """The URL match of a request for a ``lean`` API view, else ``None``."""
    path = scope.get("path", "")
    # Only the streaming speech views are lean: other calls skip the URL resolution here.
    if scope.get("type") != "http" or "/stream" not in path:
        return None
    try:
        match = get_resolver().resolve(path)
    except Resolver404:
        return None
    return match if getattr(match.func, "lean_asgi", False) else None


def is_api(scope) -> bool:
    return scope.get("type") == "http" and scope.get("path", "").startswith(API_PREFIXES)
