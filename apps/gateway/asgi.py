"""The ASGI handler of the ``/v1`` and ``/v2`` API: Django without the browser middleware.

API calls authenticate with ``xi-api-key`` and use no session, cookie, CSRF token, messages
or htmx; the site's middleware would only add work (and, being sync, thread hops) to every
call. This handler resolves the same URLconf and runs the same views with an empty
middleware chain, async from the server to the view.
"""

from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.exception import convert_exception_to_response

API_PREFIXES = ("/v1/", "/v2/")


class ApiASGIHandler(ASGIHandler):
    def load_middleware(self, is_async=False):
        self._view_middleware = []
        self._template_response_middleware = []
        self._exception_middleware = []
        get_response = self._get_response_async if is_async else self._get_response
        self._middleware_chain = convert_exception_to_response(get_response)


def is_api(scope) -> bool:
    return scope.get("type") == "http" and scope.get("path", "").startswith(API_PREFIXES)
