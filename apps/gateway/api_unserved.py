"""Answers for ``/v1`` and ``/v2`` paths Chorus does not serve, in ElevenLabs' error shape.

Without these, a path no route takes got Django's HTML 404 (in debug mode, a page listing the
whole URL conf), and an official path that a route's parameter takes (``/v1/voices/accents``
for a voice id) got that route's answer: ``voice_not_found``, or a 405.
"""

import uuid

from django.views.decorators.csrf import csrf_exempt

from . import responses
from .services import ApiRefused

PATH_SHOWN = 200  # characters of an unknown path repeated in its message


def _not_found(code: str, message: str):
    refusal = ApiRefused(404, code, message, kind="not_found")
    return responses.error_response(refusal, request_id=uuid.uuid4().hex)


@csrf_exempt
def not_supported(request, *, operations: str, **kwargs):
    """An endpoint of the official API that Chorus does not serve (``operations`` names it:
    methods, path and title), whatever the method and parameters."""
    return _not_found(
        "not_supported",
        f"Chorus does not serve this endpoint of the ElevenLabs API: {operations}.",
    )


@csrf_exempt
def not_found(request, **kwargs):
    """Any other ``/v1`` or ``/v2`` path: no endpoint, for every method."""
    path = request.path
    shown = path if len(path) <= PATH_SHOWN else path[:PATH_SHOWN] + "…"
    return _not_found(
        "not_found",
        f"There is no endpoint at {request.method} {shown}: check the path against the "
        "ElevenLabs API reference.",
    )
