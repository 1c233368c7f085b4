"""Dates in the member's time zone: their own setting (``User.time_zone``, set on the spend
page) when they chose one, else the browser's zone, from the ``tz`` cookie that
``static/js/chorus.js`` sets (``Intl.DateTimeFormat().resolvedOptions().timeZone``).

A cookie that is not a zoneinfo name is ignored (UTC, or ``TIME_ZONE``); nothing here can fail a
request.
"""

from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from django.utils import timezone

COOKIE = "tz"


# In the system's zoneinfo but no place's zone: "localtime" is the server's own, "Factory"
# a placeholder, "posixrules" a rules file.
NOT_ZONES = frozenset({"localtime", "Factory", "posixrules", "posix", "right"})


@lru_cache(maxsize=1)
def _known() -> frozenset[str]:
    return frozenset(
        name
        for name in available_timezones()
        if name not in NOT_ZONES and not name.startswith(("posix/", "right/"))
    )


def zone_of(name: str | None) -> ZoneInfo | None:
    """The zone called ``name`` when it is a real zoneinfo name, else None."""
    if not name or len(name) > 64 or name not in _known():
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


class TimezoneMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = getattr(request, "user", None)
        chosen = getattr(user, "time_zone", "") if getattr(user, "is_authenticated", False) else ""
        zone = zone_of(chosen) or zone_of(request.COOKIES.get(COOKIE))
        if zone is None:
            timezone.deactivate()
        else:
            timezone.activate(zone)
        try:
            return self.get_response(request)
        finally:
            timezone.deactivate()
