"""ASGI entry point: Django for HTTP, Channels consumers for websockets."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studio_site.settings")
# Build the Django app before importing anything that touches models.
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from apps.gateway.asgi import ApiASGIHandler, is_api  # noqa: E402
from studio_site.routing import api_websocket_urlpatterns, websocket_urlpatterns  # noqa: E402

api_asgi_app = ApiASGIHandler()


async def http_app(scope, receive, send):
    """``/v1`` and ``/v2`` skip the site's middleware (see ``apps.gateway.asgi``)."""
    app = api_asgi_app if is_api(scope) else django_asgi_app
    return await app(scope, receive, send)


browser_websockets = AllowedHostsOriginValidator(
    AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
)
# /v1 sockets are authenticated by personal keys, not cookies: scripts send no Origin.
api_websockets = URLRouter(api_websocket_urlpatterns)


async def websocket_app(scope, receive, send):
    app = api_websockets if scope.get("path", "").startswith("/v1/") else browser_websockets
    return await app(scope, receive, send)


application = ProtocolTypeRouter({"http": http_app, "websocket": websocket_app})
