"""Dates are shown in the member's time zone: their own setting, else the ``tz`` cookie
(studio_site.timezones)."""

from datetime import UTC, datetime

import pytest
from django.urls import reverse
from django.utils import timezone

from apps.transcripts.models import Transcript
from studio_site.timezones import zone_of
from tests.transcripts.test_editor import make_transcript

NOON_UTC = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def listed(workspace, member):
    transcript = make_transcript(workspace, member)
    Transcript.objects.filter(pk=transcript.pk).update(created_at=NOON_UTC)
    return transcript


def shown_time(client) -> str:
    response = client.get(reverse("transcripts:list"))
    assert response.status_code == 200
    return response.content.decode().split('<time datetime="', 1)[1].split("</time>", 1)[0]


def test_a_date_is_shown_in_the_cookie_s_zone(client_as, viewer, listed):
    client = client_as(viewer)
    assert shown_time(client).endswith(">15 Jan 2026, 12:00")
    client.cookies["tz"] = "Europe/Berlin"
    assert shown_time(client).endswith(">15 Jan 2026, 13:00")
    client.cookies["tz"] = "America/New_York"
    assert shown_time(client).endswith(">15 Jan 2026, 07:00")


@pytest.mark.parametrize("cookie", ["Mars/Olympus", "../../etc/passwd", "", "x" * 500, "UTC\x00"])
def test_a_bad_zone_is_ignored_and_never_an_error(client_as, viewer, listed, cookie):
    client = client_as(viewer)
    client.cookies["tz"] = cookie
    assert shown_time(client).endswith(">15 Jan 2026, 12:00")


def test_the_zone_does_not_outlive_the_request(client_as, viewer, listed):
    client = client_as(viewer)
    client.cookies["tz"] = "Asia/Tokyo"
    assert shown_time(client).endswith(">15 Jan 2026, 21:00")
    assert timezone.get_current_timezone_name() == "UTC"


def test_only_real_zone_names_are_zones():
    assert zone_of("Europe/Berlin").key == "Europe/Berlin"
    assert zone_of("Europe%2FBerlin") is None
    assert zone_of("nowhere") is None and zone_of(None) is None
    # In the system's zoneinfo, but no place's zone: the server's own, placeholders, paths.
    for name in ("localtime", "Factory", "posixrules", "posix/Europe/Berlin", "../etc/passwd"):
        assert zone_of(name) is None, name


def test_a_members_own_zone_wins_over_the_browsers(client_as, viewer, listed):
    client = client_as(viewer)
    client.cookies["tz"] = "America/New_York"
    viewer.time_zone = "Asia/Tokyo"
    viewer.save(update_fields=["time_zone"])
    assert shown_time(client).endswith(">15 Jan 2026, 21:00")
    viewer.time_zone = ""  # blank: the browser's again
    viewer.save(update_fields=["time_zone"])
    assert shown_time(client).endswith(">15 Jan 2026, 07:00")
