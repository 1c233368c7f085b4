"""/v1 and /v2 paths Chorus does not serve answer ElevenLabs' JSON error shape, never Django's
HTML 404, and official paths that a route's parameter would take answer ``not_supported``."""

import asyncio
import re

import pytest
from channels.testing import HttpCommunicator
from django.test import Client
from django.urls import Resolver404, URLResolver, get_resolver
from django.urls.resolvers import RegexPattern

from apps.gateway import api_unserved, api_urls, services

from .openapi_check import spec

SHAPE_A = {"type", "code", "message", "status", "request_id"}
METHODS = ("get", "put", "post", "delete", "patch")


def _shape(path: str) -> str:
    """A path with its parameters blanked: ``/v1/voices/<str:voice_id>`` → ``/v1/voices/{}``."""
    return re.sub(r"\{[^}]*\}|<[^>]*>", "{}", path)


def swallowed_spec_paths() -> dict[str, list[str]]:
    """The spec's paths (with their methods) that no API route serves but one takes for its
    parameters: ``/v1/voices/accents`` resolves to ``v1/voices/<str:voice_id>``."""
    served = URLResolver(RegexPattern(r"^/"), api_urls.urlpatterns)
    found = {}
    for path, operations in spec()["paths"].items():
        try:
            match = served.resolve(re.sub(r"\{[^}]*\}", "some-id", path))
        except Resolver404:
            continue
        if _shape("/" + match.route) != _shape(path):
            found[path] = [method.upper() for method in METHODS if method in operations]
    return found


SWALLOWED = swallowed_spec_paths()


@pytest.fixture
def issued(workspace, member):
    return services.api_key_create(workspace=workspace, user=member, name="Script")


def call(method: str, path: str, raw: str | None = None, body: str = "{}"):
    headers = {"HTTP_XI_API_KEY": raw} if raw is not None else {}
    return Client().generic(method, path, body, content_type="application/json", **headers)


def detail_of(response, status: int = 404) -> dict:
    assert response.status_code == status, response.content
    assert response["content-type"] == "application/json"
    assert b"<html" not in response.content.lower()
    detail = response.json()["detail"]
    assert set(detail) >= SHAPE_A, detail
    assert detail["status"] == detail["code"]
    assert detail["request_id"] == response["request-id"]
    return detail


# --- Unknown paths ------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS"])
@pytest.mark.parametrize(
    "path", ["/v1/no-such-thing", "/v2/no/such/thing", "/v1/voices/abc/no-such", "/v1"]
)
def test_an_unknown_path_is_a_json_404_for_every_method(db, issued, method, path):
    response = call(method, path, issued.raw)
    assert response.status_code == 404
    if method == "HEAD":  # no body, but still the API's content type
        assert response["content-type"] == "application/json"
        return
    detail = detail_of(response)
    assert detail["code"] == "not_found" and detail["type"] == "not_found"
    assert f"{method} {path}" in detail["message"]


def test_an_unknown_path_needs_no_key(db):
    assert detail_of(call("GET", "/v1/no-such-thing"))["code"] == "not_found"


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_with_debug_on_an_unknown_path_is_still_json_and_lists_no_routes(db, settings, method):
    settings.DEBUG = True
    response = call(method, "/v1/no-such-thing")
    assert detail_of(response)["code"] == "not_found"
    assert b"text-to-speech" not in response.content  # no URL conf in the answer


def test_a_very_long_unknown_path_is_cut_in_the_message(db):
    path = "/v1/" + "x" * 5000
    message = detail_of(call("GET", path))["message"]
    assert len(message) < api_unserved.PATH_SHOWN + 200


def test_paths_outside_the_api_keep_the_site_s_404(db, client):
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    assert response["content-type"].startswith("text/html")


def test_the_api_s_own_asgi_handler_answers_json_with_debug_on(db, settings):
    """Through ``studio_site.asgi`` (``ApiASGIHandler``: no site middleware), as Daphne runs it."""
    from studio_site.asgi import application

    settings.DEBUG = True

    async def scenario():
        communicator = HttpCommunicator(application, "POST", "/v1/no-such-thing", body=b"{}")
        return await communicator.get_response(timeout=10)

    response = asyncio.run(scenario())
    headers = {k.decode().lower(): v.decode() for k, v in response["headers"]}
    assert response["status"] == 404
    assert headers["content-type"] == "application/json"
    assert b'"code": "not_found"' in response["body"]


# --- Official paths that a route's parameter would take -------------------------------------


def test_the_swallowed_paths_are_found():
    assert "/v1/voices/accents" in SWALLOWED
    assert "/v1/history/download" in SWALLOWED


def test_every_swallowed_path_has_its_unserved_route_and_no_other_route_is_there():
    """The explicit list in ``api_urls.unserved_patterns`` is exactly the computed one (a new
    route that swallows an official path fails here until that path is listed)."""
    unserved = {"/" + str(p.pattern) for p in api_urls.unserved_patterns}
    assert unserved == set(SWALLOWED)
    for pattern in api_urls.unserved_patterns:
        assert pattern.callback is api_unserved.not_supported


@pytest.mark.parametrize(
    ("method", "path"),
    [(method, path) for path, methods in sorted(SWALLOWED.items()) for method in methods],
)
def test_a_swallowed_official_path_answers_not_supported(db, issued, method, path):
    assert get_resolver().resolve(path).func is api_unserved.not_supported
    for raw in (issued.raw, None):
        response = call(method, path, raw)
        detail = detail_of(response)
        assert detail["code"] == "not_supported", detail
        assert path in detail["message"] and method in detail["message"]


@pytest.mark.parametrize("path", sorted(SWALLOWED))
def test_a_swallowed_path_answers_the_same_for_a_method_the_spec_lacks(db, issued, path):
    response = call("PATCH", path, issued.raw)
    assert detail_of(response)["code"] == "not_supported"


def test_the_default_voice_settings_are_served_not_taken_for_a_voice(db, issued):
    response = call("GET", "/v1/voices/settings/default", issued.raw)
    assert response.status_code == 200, response.content
    assert set(response.json()) >= {"stability", "similarity_boost"}
