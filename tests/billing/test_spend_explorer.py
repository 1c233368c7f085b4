"""The spend explorer's page and drill-down: totals equal the settled ledger for every grouping
and period, a cell opens exactly its rows, buckets follow the viewer's time zone, and a query
string that does not parse is a 400 that says why.

The ledger is written through the real metering path (``meter_reserve`` + ``meter_settle``);
the rows are then moved to the times a test needs and the rollup is rebuilt from them
(``rollup_rebuild``), as ``manage.py spend_rollup_rebuild`` does."""

import re
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from html import unescape
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.billing import services
from apps.billing.models import SpendRollup, UsageEvent, UsageStatus
from apps.billing.rollup import rollup_rebuild
from apps.billing.spend import DIMENSIONS, NONE
from tests.factories import make_user

# A fixed "today" would need freezing time; the tests place rows relative to now instead.
BERLIN = ZoneInfo("Europe/Berlin")


def price(workspace, per_credit="0.00022"):
    plan = services.plan_for(workspace)
    plan.price_per_credit = Decimal(per_credit)
    plan.save()
    return plan


def spent(
    workspace,
    user,
    *,
    at: datetime,
    credits,
    capability="tts",
    engine="elevenlabs",
    model_id="eleven_multilingual_v2",
    voice_id="voice-rachel",
    project="",
    source="ui",
    api_key_id=None,
    purpose=None,
    outcome="settled",
) -> UsageEvent:
    """One call in the ledger at ``at``: reserved and settled (or refunded) by the metering
    service, then moved to ``at``. Local calls cost 0 and carry their shadow cost."""
    reservation = services.meter_reserve(
        workspace=workspace,
        user=user,
        capability=capability,
        engine=engine,
        model_id=model_id,
        units=Decimal(str(credits)),
        source=source,
        voice_id=voice_id,
        api_key_id=api_key_id,
        purpose=purpose,
        project=project,
    )
    event = reservation.event
    if outcome == "settled":
        event = services.meter_settle(
            event=event,
            units=Decimal(str(credits)),
            upstream_credits=None if engine == "local" else Decimal(str(credits)),
        )
    else:
        event = services.meter_refund(event=event, note="test")
    UsageEvent.objects.filter(pk=event.pk).update(created_at=at)
    event.refresh_from_db()
    return event


def rebuild(workspace):
    rollup_rebuild(workspace)


def now_in(zone) -> datetime:
    return datetime.now(UTC).astimezone(zone)


def at_days_ago(days: int, hour: int = 12, zone=UTC) -> datetime:
    day = now_in(zone).date() - timedelta(days=days)
    return datetime(day.year, day.month, day.day, hour, 15, tzinfo=zone)


@pytest.fixture
def ledger(workspace, owner, manager, member):
    """A small mixed ledger over the last 40 days: three people, two engines, projects,
    keys, sources, a refunded call (0) — and another workspace's spend that must not show."""
    price(workspace)
    rows = []
    people = [owner, manager, member]
    for i in range(24):
        rows.append(
            spent(
                workspace,
                people[i % 3],
                at=at_days_ago(i * 37 % 40, hour=(i * 5) % 24),
                credits=Decimal(100 + i * 17) + Decimal("0.125"),
                capability=["tts", "sound_effect", "music"][i % 3 if i % 5 else 0],
                engine="local" if i % 4 == 0 else "elevenlabs",
                model_id=["eleven_multilingual_v2", "eleven_v3"][i % 2],
                voice_id=["voice-rachel", "voice-adam", ""][i % 3],
                project=["", "p-alpha", "p-beta"][(i // 2) % 3],
                source=["ui", "api", "job"][(i // 3) % 3],
                api_key_id=[None, 7, 9][(i // 4) % 3],
            )
        )
    spent(workspace, member, at=at_days_ago(2), credits=500, outcome="refunded")
    stranger = make_user("stranger@example.com")
    from tests.factories import make_workspace

    elsewhere = make_workspace("Elsewhere inc", owner=stranger)
    spent(elsewhere, stranger, at=at_days_ago(1), credits=9999)
    rebuild(workspace)
    rebuild(elsewhere)
    return rows


def table_of(html: str) -> dict[str, dict]:
    """The spend table of a page: {row value: {"cells": [...], "credits": Decimal}}."""
    out = {}
    for value, body in re.findall(r'<tr data-row="([^"]*)">(.*?)</tr>', html, re.S):
        cells = [
            Decimal(re.sub(r"<[^>]+>", "", c).strip() or "0")
            for c in re.findall(r"<td data-cell>(.*?)</td>", body, re.S)
        ]
        credits = Decimal(
            re.sub(r"<[^>]+>", "", re.search(r"<td data-credits>(.*?)</td>", body).group(1))
        )
        money = Decimal(re.search(r"<td data-money>(.*?)</td>", body).group(1))
        label = re.search(r'<th scope="row">(?:<a href="[^"]*">)?(.*?)(?:</a>)?</th>', body).group(
            1
        )
        out[value] = {"cells": cells, "credits": credits, "money": money, "label": unescape(label)}
    return out


def settled(workspace, start=None, end=None):
    qs = UsageEvent.objects.filter(workspace=workspace, status=UsageStatus.SETTLED)
    if start:
        qs = qs.filter(created_at__gte=start)
    if end:
        qs = qs.filter(created_at__lt=end)
    return list(qs)


def ledger_key(event, dim: str) -> str:
    value = getattr(event, DIMENSIONS[dim].event)
    return NONE if value in (None, "", 0) else str(value)


def range_of(days=40, zone=UTC):
    today = now_in(zone).date()
    start = today - timedelta(days=days)
    return start, today


@pytest.mark.parametrize("period", ["day", "week", "month"])
@pytest.mark.parametrize("group", list(DIMENSIONS))
def test_totals_equal_the_settled_ledger_for_every_grouping_and_period(
    client_as, owner, workspace, ledger, period, group
):
    start, end = range_of()
    response = client_as(owner).get(
        "/billing/spend/",
        {"period": period, "by": group, "from": start.isoformat(), "to": end.isoformat()},
    )
    assert response.status_code == 200
    table = table_of(response.content.decode())
    rows = settled(
        workspace,
        datetime(start.year, start.month, start.day, tzinfo=UTC),
        datetime(end.year, end.month, end.day, tzinfo=UTC) + timedelta(days=1),
    )
    expected = defaultdict(Decimal)
    expected_money = defaultdict(Decimal)
    for event in rows:
        expected[ledger_key(event, group)] += event.credits
        expected_money[ledger_key(event, group)] += event.money
    total = table.pop("total")
    assert {k: v["credits"] for k, v in table.items()} == dict(expected)
    assert {k: v["money"] for k, v in table.items()} == dict(expected_money)
    assert total["credits"] == sum(e.credits for e in rows) > 0
    # The bucket cells add up to each row's total, and the column totals to the grand total.
    for row in table.values():
        assert sum(row["cells"]) == row["credits"]
    assert sum(total["cells"]) == total["credits"]
    for i in range(len(total["cells"])):
        assert sum(row["cells"][i] for row in table.values()) == total["cells"][i]


def test_money_measure_sums_money_exactly(client_as, owner, workspace, ledger):
    start, end = range_of()
    response = client_as(owner).get(
        "/billing/spend/", {"measure": "money", "from": start.isoformat(), "to": end.isoformat()}
    )
    table = table_of(response.content.decode())
    total = table.pop("total")
    assert sum(total["cells"]) == total["money"] == sum(e.money for e in settled(workspace))
    assert total["money"] > 0


def test_the_shadow_cost_of_local_drafts_is_shown_apart_and_never_in_the_totals(
    client_as, owner, workspace, ledger
):
    start, end = range_of()
    html = (
        client_as(owner)
        .get("/billing/spend/", {"by": "engine", "from": start.isoformat(), "to": end.isoformat()})
        .content.decode()
    )
    local = [e for e in settled(workspace) if e.engine == "local"]
    shadow = sum(e.shadow_credits for e in local)
    assert shadow > 0 and all(e.credits == 0 for e in local)
    table = table_of(html)
    assert table["local"]["credits"] == 0
    assert table["total"]["credits"] == sum(e.credits for e in settled(workspace))
    footer = re.search(r'<tr data-row="total">.*?</tr>', html, re.S).group(0)
    assert f'<td class="muted" data-shadow>{shadow}</td>' in footer
    assert "not charged" in html


def test_a_call_at_2330_utc_lands_on_the_next_day_in_berlin(client_as, owner, workspace):
    price(workspace)
    day = now_in(UTC).date() - timedelta(days=3)
    late = datetime(day.year, day.month, day.day, 23, 30, tzinfo=UTC)
    spent(workspace, owner, at=late, credits=42)
    rebuild(workspace)
    params = {"period": "day", "from": (day - timedelta(days=1)).isoformat(),
              "to": (day + timedelta(days=2)).isoformat()}  # fmt: skip
    client = client_as(owner)
    client.cookies["tz"] = "Europe/Berlin"
    html = client.get("/billing/spend/", params).content.decode()
    assert "Europe/Berlin" in html
    next_day = (day + timedelta(days=1)).isoformat()
    cell = re.search(rf'bucket={next_day}">([\d.]+)</a>', html)
    assert cell and Decimal(cell.group(1)) == 42
    assert not re.search(rf'bucket={day.isoformat()}">', html)
    # In UTC (the member's own setting beats the browser) it is the day itself.
    owner.time_zone = "UTC"
    owner.save()
    html = client.get("/billing/spend/", params).content.decode()
    assert re.search(rf'bucket={day.isoformat()}">42.000</a>', html)
    # The drill-down of the Berlin cell lists that call.
    owner.time_zone = "Europe/Berlin"
    owner.save()
    rows = client.get("/billing/spend/rows/", {**params, "bucket": next_day}).content.decode()
    assert rows.count("data-event=") == 1


def test_a_cell_drills_down_to_exactly_its_rows(client_as, owner, workspace, ledger):
    start, end = range_of()
    client = client_as(owner)
    html = client.get(
        "/billing/spend/",
        {"period": "week", "by": "voice", "from": start.isoformat(), "to": end.isoformat()},
    ).content.decode()
    links = re.findall(
        r'<td data-cell><a href="(/billing/spend/rows/\?[^"]+)">([\d.]+)</a></td>', html
    )
    assert len(links) > 3
    for url, value in links:
        page = client.get(url.replace("&amp;", "&")).content.decode()
        ids = [int(i) for i in re.findall(r'data-event="(\d+)"', page)]
        credits = sum((e.credits for e in UsageEvent.objects.filter(pk__in=ids)), Decimal("0.000"))
        assert credits == Decimal(value), url
    # and a row of the drill-down is exactly one event of the cell: nothing else, no duplicates
    first_url = links[0][0].replace("&amp;", "&")
    page = client.get(first_url).content.decode()
    ids = re.findall(r'data-event="(\d+)"', page)
    assert len(ids) == len(set(ids))


def test_the_drill_down_is_paged(client_as, owner, workspace):
    """Keyset pages (no count): 50 rows and a "Later" link, then the 5 others and an
    "Earlier" link back to the same first 50; every row of the cell once; a cursor that does
    not parse is a 400 that says so. Rows at the same instant are ordered by id."""
    price(workspace)
    at = at_days_ago(1)
    for i in range(55):
        spent(workspace, owner, at=at + timedelta(seconds=i // 3), credits=1)
    rebuild(workspace)
    client = client_as(owner)
    day = at.date().isoformat()
    base = {"from": day, "to": day, "bucket": day}

    def ids_and_links(response):
        html = response.content.decode()
        ids = [int(i) for i in re.findall(r'data-event="(\d+)"', html)]
        later = re.search(r'rel="next" href="\?([^"]+)"', html)
        earlier = re.search(r'rel="prev" href="\?([^"]+)"', html)
        return (
            ids,
            (later and later[1].replace("&amp;", "&")),
            (earlier and earlier[1].replace("&amp;", "&")),
        )

    first, later, earlier = ids_and_links(client.get("/billing/spend/rows/", base))
    assert len(first) == 50 and later and not earlier
    second, later2, earlier2 = ids_and_links(client.get(f"/billing/spend/rows/?{later}"))
    assert len(second) == 5 and not later2 and earlier2
    expected = list(
        UsageEvent.objects.filter(workspace=workspace, status=UsageStatus.SETTLED)
        .order_by("created_at", "id")
        .values_list("id", flat=True)
    )
    assert first + second == expected
    back, _, earlier3 = ids_and_links(client.get(f"/billing/spend/rows/?{earlier2}"))
    assert back == first and not earlier3
    bad = client.get("/billing/spend/rows/", {**base, "after": "12x-3"})
    assert bad.status_code == 400
    assert "page link is not valid" in bad.content.decode()


def test_a_drill_down_row_links_to_what_it_paid_for(client_as, owner, workspace):
    from apps.jobs.models import Job

    price(workspace)
    job = Job.objects.create(workspace=workspace, created_by=owner, kind="tts")
    spent(workspace, owner, at=at_days_ago(1), credits=5, purpose=("job", str(job.pk)))
    rebuild(workspace)
    day = at_days_ago(1).date().isoformat()
    html = client_as(owner).get("/billing/spend/rows/", {"from": day, "to": day}).content.decode()
    assert f'href="/jobs/{job.pk}/"' in html


@pytest.mark.parametrize(
    "params, field",
    [
        ({"by": "colour"}, "by"),
        ({"period": "fortnight"}, "period"),
        ({"from": "2025-13-01"}, "from"),
        ({"to": "yesterday"}, "to"),
        ({"from": "2025-03-10", "to": "2025-03-01"}, "from"),
        ({"from": "2001-01-01", "to": "2025-01-01"}, "from"),
        ({"capability": "teleport"}, "capability"),
        ({"member": "abc"}, "member"),
        ({"key": "1 OR 1=1"}, "key"),
        ({"voice": "a\x07b"}, "voice"),  # a control character (any other text may be a voice)
        ({"project": "x" * 121}, "project"),
        ({"measure": "euros"}, "measure"),
        ({"from": "2025-01-01", "to": "2025-04-03"}, "from"),  # 92 days by day at most
    ],
)
def test_bad_query_strings_are_a_400_that_says_what_is_wrong(
    client_as, owner, workspace, params, field
):
    client = client_as(owner)
    response = client.get("/billing/spend/", params)
    assert response.status_code == 400
    assert f"<code>{field}</code>" in response.content.decode()
    for url in ("/billing/spend/rows/", "/billing/spend/table.csv", "/billing/spend/rows.csv"):
        if params.get("to") == "2025-04-03" and "table" not in url:
            continue  # the ledger rows of a long range are listed whatever the period
        response = client.get(url, params)
        assert response.status_code == 400, url
        assert field in response.content.decode()


def test_a_bad_bucket_is_a_400(client_as, owner, workspace):
    client = client_as(owner)
    assert client.get("/billing/spend/rows/", {"bucket": "soon"}).status_code == 400
    response = client.get(
        "/billing/spend/rows/",
        {"period": "week", "bucket": "2025-03-05", "from": "2025-03-01", "to": "2025-03-31"},
    )
    assert response.status_code == 400  # a Wednesday starts no week
    assert "No week starts on 2025-03-05" in response.content.decode()


def test_a_manager_asking_for_a_member_of_another_workspace_is_told(
    client_as, manager, outsider, workspace
):
    response = client_as(manager).get("/billing/spend/", {"member": outsider.pk})
    assert response.status_code == 400
    assert "No such member in this workspace" in response.content.decode()


def _count_queries(client, url, params, show=False):
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url, params)
        if hasattr(response, "streaming_content"):
            b"".join(response.streaming_content)
    assert response.status_code == 200
    if show:
        for q in ctx.captured_queries:
            print(q["sql"][:300])
    return len(ctx.captured_queries)


@pytest.mark.parametrize("by", ["member", "project", "voice"])
def test_the_number_of_queries_does_not_grow_with_the_ledger(client_as, owner, workspace, by):
    price(workspace)
    people = [owner] + [make_user(f"p{i}@example.com") for i in range(5)]
    from tests.factories import add_member

    for person in people[1:]:
        add_member(workspace, person)
    SpendRollup.objects.filter(workspace=workspace).delete()

    def fill(n, offset):
        hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        SpendRollup.objects.bulk_create(
            SpendRollup(
                workspace=workspace,
                hour=hour - timedelta(hours=(i * 7 + offset) % (24 * 30)),
                user_id=people[i % len(people)].pk,
                capability="tts",
                model_id="eleven_v3",
                voice_id=f"voice-{i % 13}",
                project=f"p-{i % 11}",
                source="ui",
                engine="elevenlabs",
                api_key_id=i + offset,  # every row its own key: unique rows
                events=1,
                credits=Decimal(i),
            )
            for i in range(n)
        )

    client = client_as(owner)
    start, end = range_of(29)
    params = {"by": by, "from": start.isoformat(), "to": end.isoformat()}
    fill(10, 0)
    _count_queries(client, "/billing/spend/", params)  # the session's first request warms caches
    small = {
        u: _count_queries(client, u, params)
        for u in ("/billing/spend/", "/billing/spend/table.csv")
    }
    fill(1000, 100000)
    large = {
        u: _count_queries(client, u, params)
        for u in ("/billing/spend/", "/billing/spend/table.csv")
    }
    _count_queries(client, "/billing/spend/", params, show=True)
    assert small == large
    assert large["/billing/spend/"] <= 12, large


def test_the_time_zone_setting_is_saved_and_checked(client_as, member, workspace):
    client = client_as(member)
    response = client.post("/billing/spend/time-zone/", {"time_zone": "Asia/Tokyo"})
    assert response.status_code == 303
    member.refresh_from_db()
    assert member.time_zone == "Asia/Tokyo"
    assert "Asia/Tokyo" in client.get("/billing/spend/").content.decode()
    response = client.post("/billing/spend/time-zone/", {"time_zone": "Mars/Olympus"})
    assert response.status_code == 400
    assert "not a time zone" in response.content.decode()
    member.refresh_from_db()
    assert member.time_zone == "Asia/Tokyo"
    client.post("/billing/spend/time-zone/", {"time_zone": ""})
    member.refresh_from_db()
    assert member.time_zone == ""
    # An outside "next" is not followed.
    response = client.post(
        "/billing/spend/time-zone/", {"time_zone": "UTC", "next": "https://evil.example/"}
    )
    assert response["Location"] == "/billing/spend/"
    assert client.get("/billing/spend/time-zone/").status_code == 405


def test_the_explorer_draws_the_chart_from_a_json_script(client_as, owner, workspace, ledger):
    html = client_as(owner).get("/billing/spend/").content.decode()
    assert '<script id="spend-data" type="application/json">' in html
    assert "vendor/chartjs-4.6.2/chart.umd.min.js" in html
    assert "<script>" not in html  # no inline script but the json_script


def test_longer_ranges_are_shown_per_week_or_month(client_as, owner, workspace):
    client = client_as(owner)
    quarter = {"from": "2025-01-01", "to": "2025-04-02"}  # 92 days: the most per day
    assert client.get("/billing/spend/", quarter).status_code == 200
    year = {"from": "2025-01-01", "to": "2025-12-31"}
    refused = client.get("/billing/spend/", year)
    assert refused.status_code == 400
    assert "choose per week or per month" in refused.content.decode()
    for period in ("week", "month"):
        assert client.get("/billing/spend/", {**year, "period": period}).status_code == 200
    assert client.get("/billing/spend/table.csv", year).status_code == 400
    for url in ("/billing/spend/rows/", "/billing/spend/rows.csv"):  # rows: any range
        assert client.get(url, year).status_code == 200, url


def test_values_from_the_ledger_are_escaped_in_the_table(client_as, owner, workspace):
    """A voice id and a project come from callers (the API takes any): the table's rows,
    built outside the template, escape them in the label, the row's value and every link."""
    hostile = '"><img src=x onerror=alert(1)>'
    spent(workspace, owner, at=datetime.now(UTC) - timedelta(hours=2), credits=7, voice_id=hostile)
    rollup_rebuild()
    html = client_as(owner).get("/billing/spend/", {"by": "voice"}).content.decode()
    assert "<img src=x" not in html
    row = re.search(r'<tr data-row="(&quot;&gt;&lt;img[^"]*)">(.*?)</tr>', html, re.S)
    assert row, "the hostile voice's row is in the table, escaped"
    assert "&lt;img src=x onerror=alert(1)&gt;</a></th>" in row.group(2)
    cells = re.findall(r'<td data-cell><a href="([^"]+)">([\d.]+)</a></td>', row.group(2))
    assert [value for _, value in cells] == ["7.000"]
    assert "voice=%22%3E%3Cimg" in cells[0][0] and "&amp;bucket=" in cells[0][0]


def test_voices_and_keys_are_shown_by_name(client_as, owner, workspace):
    """The voices app names a voice id by its library name (a withdrawn voice too); the
    gateway names a personal key by its name and prefix; a deleted key keeps its number."""
    from django.utils import timezone

    from apps.gateway.models import ApiKey
    from apps.voices.models import LibraryVoice

    LibraryVoice.objects.create(
        workspace=workspace, engine="elevenlabs", voice_id="voice-rachel", name="Rachel"
    )
    LibraryVoice.objects.create(
        workspace=workspace,
        engine="elevenlabs",
        voice_id="voice-gone",
        name="Old narrator",
        withdrawn_at=timezone.now(),
    )
    key = ApiKey.objects.create(
        workspace=workspace, user=owner, name="CI script", prefix="chorus_ab12cd", key_hash="h" * 64
    )
    at = datetime.now(UTC) - timedelta(hours=3)
    spent(workspace, owner, at=at, credits=5, voice_id="voice-rachel", api_key_id=key.pk)
    spent(workspace, owner, at=at, credits=3, voice_id="voice-gone", api_key_id=999_999)
    spent(workspace, owner, at=at, credits=2, voice_id="voice-unknown", source="api")
    rebuild(workspace)
    client = client_as(owner)
    voices = table_of(client.get("/billing/spend/", {"by": "voice"}).content.decode())
    assert {row["label"] for row in voices.values()} >= {"Rachel", "Old narrator", "voice-unknown"}
    keys = table_of(client.get("/billing/spend/", {"by": "key"}).content.decode())
    assert {row["label"] for row in keys.values()} >= {"CI script (chorus_ab12cd…)", "Key #999999"}
