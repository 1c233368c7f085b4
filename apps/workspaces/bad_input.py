"""Requests the studio cannot take, refused with a page that says why instead of a 500.

NUL characters: PostgreSQL cannot store them in text (SQLite would keep them), so they are
refused (400) in the address, the query string and the form fields before any view runs; no
view, form or service has to think of them. A body Django cannot parse (a multipart body
without its boundary, too many fields, text fields past the size limit) raises inside
Django's request handling and reaches ``bad_request``, the site's 400 handler, which says
what was wrong (413 for a body too large).

The ``/v1`` API runs without the site's middleware under Daphne: ``gateway.api.api_view``
makes the same checks with ``nul_in`` and answers in ElevenLabs' error shape.
"""

from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import HttpResponse
from django.http.multipartparser import MultiPartParserError
from django.template import loader

NUL = "\x00"


def nul_in(request, *, form: bool = True) -> str | None:
    """Where ``request`` carries a NUL character, in words ("the address", "the field 'q'"),
    or None. ``form``: look in the form fields too (the body is parsed if it was not)."""
    if NUL in request.path:
        return "the address"
    parts = [("query parameter", request.GET)]
    if form and request.method == "POST":
        parts += [("field", request.POST), ("file field", request.FILES)]
    for what, values in parts:
        for name, items in values.lists():
            if NUL in name:
                return f"the name of a {what}"
            if any(isinstance(item, str) and NUL in item for item in items):
                return f"the {what} {name!r}"
    return None


def _page(message: str, *, status: int) -> HttpResponse:
    # Rendered without the request, as Django's own 400 page is: a request refused for a bad
    # Host header would fail again in the context processors.
    return HttpResponse(loader.render_to_string("400.html", {"message": message}), status=status)


class BadInputMiddleware:
    """Refuses a request with NUL characters in its address, query or form (400).

    Placed after ``CsrfViewMiddleware``, whose check has already parsed a POST's form.
    Views exempt from CSRF (the ``/v1`` API) read and check their own input.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        if getattr(view_func, "csrf_exempt", False):
            return None
        where = nul_in(request)
        if where is None:
            return None
        return _page(
            f"There is a NUL character (an invisible control character, often pasted from "
            f"a binary file) in {where}. Remove it and try again.",
            status=400,
        )


def bad_request(request, exception=None):
    """The site's 400 handler (``handler400``): what was wrong with the request, in words."""
    if isinstance(exception, RequestDataTooBig):
        return _page(
            "The form's text is too large to take (uploaded files do not count). "
            "Shorten it and try again.",
            status=413,
        )
    if isinstance(exception, TooManyFieldsSent | TooManyFilesSent):
        message = "The request had too many fields or files. Send fewer and try again."
    elif isinstance(exception, MultiPartParserError):
        message = (
            "The form's data could not be read (it was cut off or malformed). "
            "Reload the page and send the form again."
        )
    else:
        message = "The request could not be understood. Reload the page and try again."
    return _page(message, status=400)
