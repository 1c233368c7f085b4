"""What a review of the spend review found, kept as regression tests: malformed query strings
are a 400 (or the API's 422) with a message, never a 500; a member never reads another's key
names; ledger values callers chose (a voice id with a space, one that starts with "=") can be
drilled into from the cell that shows them."""

from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client

from apps.billing.rollup import rollup_rebuild
from apps.gateway import services as gateway

from .test_spend_explorer import spent, table_of

BAD = [
    ("/billing/spend/", {"to": "0001-01-01"}),
    ("/billing/spend/", {"to": "0001-01-30", "period": "week"}),
    ("/billing/spend/rows/", {"to": "0001-01-01"}),
    ("/billing/spend/table.csv", {"to": "0001-01-01"}),
    ("/billing/spend/rows/", {"bucket": "9999-12-31"}),
    ("/billing/spend/rows/", {"bucket": "9999-12-01", "period": "month"}),
    ("/billing/spend/rows.csv", {"bucket": "9999-12-31"}),
    ("/billing/spend/rows/", {"bucket": "0001-01-01"}),
    ("/billing/spend/rows/", {"after": "999999999999999999-1"}),
    ("/billing/spend/rows/", {"before": "999999999999999999-1"}),
    ("/billing/spend/rows/", {"after": "\u00b2-1"}),
    ("/billing/spend/", {"key": "\u00b2"}),
    ("/billing/spend/rows/", {"key": "9223372036854775808"}),
    ("/billing/spend/rows.csv", {"key": "9223372036854775808"}),
    ("/billing/spend/", {"member": "9223372036854775808"}),
    ("/billing/spend/", {"key": "\u0661"}),
    ("/billing/spend/", {"project": "a\x00b"}),
    ("/billing/spend/", {"voice": "a\nb"}),
    ("/billing/spend/", {"from": "1999-12-31", "to": "2000-01-01"}),
]


def _body(response) -> str:
    if response.streaming:
        return b"".join(response.streaming_content).decode()
    return response.content.decode()


@pytest.mark.parametrize("who", ["manager", "member"])
@pytest.mark.parametrize(("url", "params"), BAD)
def test_malformed_query_strings_are_a_400_that_says_why(request, workspace, who, url, params):
    client = Client(raise_request_exception=False)
    client.force_login(request.getfixturevalue(who))
    response = client.get(url, params)
    assert response.status_code == 400, (url, params, response.status_code)
    assert _body(response).strip()


STATS = [
    {"start_unix": "253402300799000", "end_unix": "253402300799000"},
    {"start_unix": "0", "end_unix": "3600000", "aggregation_bucket_size": str(3600 * 10**20)},
    {"start_unix": "0", "end_unix": "3600000", "aggregation_bucket_size": "360000000000"},
]


@pytest.mark.parametrize("params", STATS)
def test_character_stats_out_of_range_is_a_422(workspace, member, params):
    key = gateway.api_key_create(workspace=workspace, user=member, name="k")
    client = Client(raise_request_exception=False)
    response = client.get("/v1/usage/character-stats", params, HTTP_XI_API_KEY=key.raw)
    assert response.status_code == 422, response.content[:300]
    assert response.json()["detail"]


def test_the_end_of_the_calendar_in_character_stats_answers(workspace, member):
    key = gateway.api_key_create(workspace=workspace, user=member, name="k")
    last = "32503679999000"  # 2999-12-31 23:59:59, the latest time it takes
    for interval in ("hour", "day", "week", "month"):
        response = Client().get(
            "/v1/usage/character-stats",
            {"start_unix": last, "end_unix": last, "aggregation_interval": interval},
            HTTP_XI_API_KEY=key.raw,
        )
        assert response.status_code == 200, (interval, response.content[:300])


def test_a_member_never_reads_another_members_key_names(client_as, workspace, manager, member):
    theirs = gateway.api_key_create(workspace=workspace, user=manager, name="Boss secret CI")
    mine = gateway.api_key_create(workspace=workspace, user=member, name="My script")
    at = datetime.now(UTC) - timedelta(hours=2)
    spent(workspace, manager, at=at, credits=5, api_key_id=theirs.api_key.pk, source="api")
    spent(workspace, member, at=at, credits=3, api_key_id=mine.api_key.pk, source="api")
    rollup_rebuild()
    client = client_as(member)
    page = client.get("/billing/spend/rows/", {"key": theirs.api_key.pk}).content.decode()
    assert "Boss secret" not in page and theirs.api_key.prefix not in page
    assert f"Key #{theirs.api_key.pk}" in page
    own = table_of(client.get("/billing/spend/", {"by": "key"}).content.decode())
    own.pop("total")
    assert [row["label"].split(" (")[0] for row in own.values()] == ["My script"]
    # A manager sees both names.
    both = table_of(client_as(manager).get("/billing/spend/", {"by": "key"}).content.decode())
    assert "Boss secret CI" in {r["label"].split(" (")[0] for r in both.values()}


@pytest.mark.parametrize("voice", ["my voice", "=cmd|' /C calc'!A0", "Zoë's voice"])
def test_a_cell_of_a_caller_chosen_value_drills_down(client_as, owner, workspace, voice):
    import re
    from html import unescape

    spent(workspace, owner, at=datetime.now(UTC) - timedelta(hours=2), credits=4, voice_id=voice)
    rollup_rebuild()
    client = client_as(owner)
    html = client.get("/billing/spend/", {"by": "voice"}).content.decode()
    links = re.findall(r'<td data-cell><a href="([^"]*voice=[^"]+)">4\.000</a>', html)
    assert len(links) == 1  # the voice's cell (the total row's link has no voice)
    rows = client.get(unescape(links[0]))
    assert rows.status_code == 200, rows.content[:300]
    assert rows.content.decode().count("data-event=") == 1


def test_the_spend_of_someone_who_left_can_still_be_filtered(client_as, owner, workspace, member):
    """A flag or a link names a member by id; after they leave the workspace their rows stay
    the workspace's, and a manager can still open them (an id never in it is still a 400)."""
    spent(workspace, member, at=datetime.now(UTC) - timedelta(hours=2), credits=6)
    rollup_rebuild()
    member.memberships.filter(workspace=workspace).delete()
    client = client_as(owner)
    response = client.get("/billing/spend/rows/", {"member": member.pk})
    assert response.status_code == 200
    assert response.content.decode().count("data-event=") == 1
    assert client.get("/billing/spend/rows/", {"member": 987654}).status_code == 400
