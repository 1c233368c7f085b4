"""Reconciliation: the ledger against a fake ElevenLabs (history and usage) at the network edge,
drift both ways, paging, the night task, and the pages (managers only)."""

import logging
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import httpx
import pytest
from django.urls import reverse

from apps.billing import reconcile
from apps.billing.models import ReconcileDay, UsageEvent, UsageStatus
from apps.engines.elevenlabs.client import ElevenLabsEngine
from apps.workspaces.models import EngineKind, EngineSettings

DAY = date(2025, 3, 10)
NOON = datetime(2025, 3, 10, 12, tzinfo=UTC)


class FakeElevenLabs:
    """The provider's history and usage, answered as ``/v1/history`` (cursor paging, date
    filters, either direction) and ``/v1/usage/character-stats`` (credits per UTC day)."""

    def __init__(self):
        self.items: list[dict] = []
        self.credits: dict[date, float] = {}
        self.requests: list[httpx.Request] = []

    def add(self, item_id, at, characters, *, request_id=None, credits=None):
        self.items.append(
            {
                "history_item_id": item_id,
                "request_id": request_id,
                "voice_id": "voice_a",
                "model_id": "eleven_multilingual_v2",
                "text": "x" * characters,
                "date_unix": int(at.timestamp()),
                "character_count_change_from": 1000,
                "character_count_change_to": 1000 + characters,
                "content_type": "audio/mpeg",
                "state": "created",
                "source": "TTS",
            }
        )
        day = at.astimezone(UTC).date()
        self.credits[day] = self.credits.get(day, 0) + (characters if credits is None else credits)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        q = request.url.params
        if request.url.path == "/v1/history":
            return self._history(q)
        if request.url.path == "/v1/usage/character-stats":
            return self._usage(q)
        return httpx.Response(404, json={"detail": {"status": "not_found", "message": "No."}})

    def _history(self, q) -> httpx.Response:
        items = [
            i
            for i in self.items
            if int(q.get("date_after_unix", 0)) <= i["date_unix"]
            and i["date_unix"] < int(q.get("date_before_unix", 2**40))
        ]
        items.sort(
            key=lambda i: (i["date_unix"], i["history_item_id"]),
            reverse=q.get("sort_direction", "desc") == "desc",
        )
        if q.get("start_after_history_item_id"):
            ids = [i["history_item_id"] for i in items]
            items = items[ids.index(q["start_after_history_item_id"]) + 1 :]
        size = int(q.get("page_size", 100))
        page = items[:size]
        return httpx.Response(
            200,
            json={
                "history": page,
                "last_history_item_id": page[-1]["history_item_id"] if page else None,
                "has_more": len(items) > size,
                "scanned_until": page[-1]["date_unix"] if page else None,
            },
        )

    def _usage(self, q) -> httpx.Response:
        start = datetime.fromtimestamp(int(q["start_unix"]) / 1000, tz=UTC).date()
        end = datetime.fromtimestamp(int(q["end_unix"]) / 1000, tz=UTC).date()
        days = [start + timedelta(days=n) for n in range((end - start).days + 1)]
        stamps = [
            int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp()) * 1000 for d in days
        ]
        return httpx.Response(
            200, json={"time": stamps, "usage": {"All": [self.credits.get(d, 0) for d in days]}}
        )


@pytest.fixture
def provider():
    return FakeElevenLabs()


@pytest.fixture
def engine(provider):
    return ElevenLabsEngine(
        "sk_test", transport=httpx.MockTransport(provider), sleep=lambda _: None
    )


def _bill(workspace, user, characters, at, *, upstream_id="", capability="tts"):
    """A settled ledger row of the ElevenLabs engine (1 credit a character), dated ``at``."""
    event = UsageEvent.objects.create(
        workspace=workspace,
        user=user,
        source="api",
        capability=capability,
        engine="elevenlabs",
        model_id="eleven_multilingual_v2",
        voice_id="voice_a",
        unit="character" if capability == "tts" else "generation",
        estimated_units=characters,
        units=characters,
        estimated_credits=characters,
        credits=characters,
        upstream_request_id=upstream_id,
        request_id=uuid.uuid4().hex,
        idempotency_key=uuid.uuid4().hex,
        status=UsageStatus.SETTLED,
    )
    UsageEvent.objects.filter(pk=event.pk).update(created_at=at)
    return event


def test_a_day_where_every_call_matches_agrees(workspace, member, provider, engine):
    for n in range(3):
        _bill(workspace, member, 100, NOON + timedelta(minutes=n), upstream_id=f"req_{n}")
        provider.add(
            f"hist_{n}", NOON + timedelta(minutes=n, seconds=1), 100, request_id=f"req_{n}"
        )

    (row,) = reconcile.reconcile_run(workspace=workspace, engine=engine, days=1, until=DAY)

    assert (row.day, row.ledger_requests, row.provider_requests) == (DAY, 3, 3)
    assert (row.ledger_characters, row.provider_characters) == (300, 300)
    assert row.ledger_credits == row.provider_credits == Decimal(300)
    assert row.detail["only_ledger"] == [] and row.detail["only_provider"] == []
    assert reconcile.DayDrift(row).agrees


def test_drift_both_ways_is_explained_by_the_rows(workspace, member, provider, engine):
    _bill(workspace, member, 100, NOON, upstream_id="req_both")
    provider.add("hist_both", NOON, 100, request_id="req_both")
    missing = _bill(workspace, member, 40, NOON + timedelta(hours=1), upstream_id="req_lost")
    provider.add("hist_outside", NOON + timedelta(hours=2), 70, request_id="req_elsewhere")

    (row,) = reconcile.reconcile_run(workspace=workspace, engine=engine, days=1, until=DAY)

    drift = reconcile.DayDrift(row)
    assert (row.ledger_requests, row.provider_requests) == (2, 2)
    assert (row.ledger_characters, row.provider_characters) == (140, 170)
    assert (row.ledger_credits, row.provider_credits) == (Decimal(140), Decimal(170))
    assert (drift.characters, drift.credits, drift.agrees) == (-30, Decimal(-30), False)
    assert [r["upstream_request_id"] for r in row.detail["only_ledger"]] == ["req_lost"]
    assert row.detail["only_ledger"][0]["request_id"] == missing.request_id
    assert [i["history_item_id"] for i in row.detail["only_provider"]] == ["hist_outside"]
    assert row.detail["only_provider"][0]["characters"] == 70


def test_a_row_billed_without_a_provider_request_id_is_unexplained(
    workspace, member, provider, engine
):
    _bill(workspace, member, 10, NOON, upstream_id="")
    (row,) = reconcile.reconcile_run(workspace=workspace, engine=engine, days=1, until=DAY)
    assert row.detail["only_ledger_count"] == 1 and row.provider_requests == 0


def test_history_is_read_page_after_page_with_the_date_filters(
    workspace, member, provider, engine, monkeypatch
):
    monkeypatch.setattr(reconcile, "PAGE_SIZE", 3)
    for n in range(8):
        at = NOON + timedelta(minutes=n)
        _bill(workspace, member, 10, at, upstream_id=f"req_{n}")
        provider.add(f"hist_{n}", at, 10, request_id=f"req_{n}")
    provider.add("hist_old", NOON - timedelta(days=3), 10, request_id="req_old")

    (row,) = reconcile.reconcile_run(workspace=workspace, engine=engine, days=1, until=DAY)

    pages = [r for r in provider.requests if r.url.path == "/v1/history"]
    assert len(pages) == 3
    assert [p.url.params.get("start_after_history_item_id") for p in pages] == [
        None,
        "hist_2",
        "hist_5",
    ]
    first = pages[0].url.params
    start = int(datetime(2025, 3, 10, tzinfo=UTC).timestamp())
    assert int(first["date_after_unix"]) == start - 3600  # the window less its margin
    assert int(first["date_before_unix"]) == start + 86400 + 3600
    assert (first["page_size"], first["sort_direction"]) == ("3", "asc")
    assert (row.ledger_requests, row.provider_requests, row.detail["only_ledger_count"]) == (
        8,
        8,
        0,
    )
    usage = next(r for r in provider.requests if r.url.path == "/v1/usage/character-stats")
    assert int(usage.url.params["start_unix"]) == start * 1000
    assert usage.url.params["aggregation_interval"] == "day"


def test_a_call_near_midnight_matches_across_the_day_boundary(workspace, member, provider, engine):
    late = datetime(2025, 3, 10, 23, 59, 59, tzinfo=UTC)
    _bill(workspace, member, 10, late, upstream_id="req_midnight")
    provider.add("hist_midnight", late + timedelta(seconds=2), 10, request_id="req_midnight")

    (row,) = reconcile.reconcile_run(workspace=workspace, engine=engine, days=1, until=DAY)

    assert (row.ledger_requests, row.provider_requests) == (1, 0)  # the item is on the 11th
    assert row.detail["only_ledger"] == [] and row.detail["only_provider"] == []


def test_every_day_of_the_window_is_kept_and_a_second_check_replaces_it(
    workspace, member, provider, engine
):
    _bill(workspace, member, 5, NOON - timedelta(days=1), upstream_id="req_a")
    days = reconcile.reconcile_run(workspace=workspace, engine=engine, days=3, until=DAY)
    assert [d.day for d in days] == [DAY - timedelta(days=2), DAY - timedelta(days=1), DAY]
    assert [d.ledger_requests for d in days] == [0, 1, 0]
    provider.add("hist_a", NOON - timedelta(days=1), 5, request_id="req_a")
    reconcile.reconcile_run(workspace=workspace, engine=engine, days=3, until=DAY)
    again = ReconcileDay.objects.get(workspace=workspace, day=DAY - timedelta(days=1))
    assert ReconcileDay.objects.filter(workspace=workspace).count() == 3
    assert reconcile.DayDrift(again).agrees


def test_music_and_other_rows_count_in_credits_but_not_as_missing_history(
    workspace, member, provider, engine
):
    _bill(workspace, member, 3, NOON, upstream_id="req_song", capability="music")
    (row,) = reconcile.reconcile_run(workspace=workspace, engine=engine, days=1, until=DAY)
    assert (row.ledger_requests, row.detail["only_ledger_count"]) == (0, 0)
    assert row.ledger_credits > 0


def test_the_night_task_reconciles_every_workspace_on_elevenlabs(
    workspace, member, provider, monkeypatch, caplog, outsider
):
    EngineSettings.objects.create(workspace=workspace, kind=EngineKind.ELEVENLABS)
    broken = outsider.memberships.get().workspace
    EngineSettings.objects.create(workspace=broken, kind=EngineKind.ELEVENLABS)
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    at = datetime(yesterday.year, yesterday.month, yesterday.day, 9, tzinfo=UTC)
    _bill(workspace, member, 7, at, upstream_id="req_y")

    def failing(request):
        return httpx.Response(500, json={"detail": {"status": "error", "message": "down"}})

    def engine_for(ws, *, row):
        handler = failing if ws.pk == broken.pk else provider
        return ElevenLabsEngine(
            "sk_test", transport=httpx.MockTransport(handler), sleep=lambda _: None, max_retries=0
        )

    monkeypatch.setattr(reconcile, "_engine_source", [])
    assert reconcile.reconcile_nightly(days=2) == 0  # nothing registered: nothing done
    reconcile.engine_source_register(engine_for)
    with caplog.at_level(logging.ERROR, logger="apps.billing.reconcile"):
        assert reconcile.reconcile_nightly(days=2) == 1
    assert "reconciliation of workspace" in caplog.text
    row = ReconcileDay.objects.get(workspace=workspace, day=yesterday)
    assert row.detail["only_ledger"][0]["upstream_request_id"] == "req_y"
    assert not ReconcileDay.objects.filter(workspace=broken).exists()


# --- The pages ------------------------------------------------------------------------------


def _on_elevenlabs(workspace):
    EngineSettings.objects.create(workspace=workspace, kind=EngineKind.ELEVENLABS)


def test_managers_see_the_days_with_their_drift(
    client_as, manager, workspace, member, provider, engine
):
    _on_elevenlabs(workspace)
    _bill(workspace, member, 40, NOON, upstream_id="req_lost")
    provider.add("hist_extra", NOON, 70, request_id="req_extra")
    reconcile.reconcile_run(workspace=workspace, engine=engine, days=2, until=DAY)

    page = client_as(manager).get(reverse("billing:reconcile")).content.decode()
    assert 'data-day="2025-03-10"' in page and 'data-day="2025-03-09"' in page
    assert "1 call billed that the provider has not" in page
    assert "1 item the provider has that Chorus did not bill" in page
    assert "Agrees" in page and "Drift" in page

    day = client_as(manager).get(reverse("billing:reconcile_day", args=["2025-03-10"]))
    body = day.content.decode()
    assert day.status_code == 200
    assert "req_lost" in body.split('id="only-ledger"')[1].split('id="only-provider"')[0]
    assert "hist_extra" in body.split('id="only-provider"')[1]


def test_on_the_local_engine_there_is_nothing_to_reconcile(client_as, owner, workspace):
    page = client_as(owner).get(reverse("billing:reconcile")).content.decode()
    assert "Nothing to reconcile" in page and "Check now" not in page


def test_the_pages_are_for_managers(
    client_as, member, viewer, outsider, workspace, provider, engine
):
    _on_elevenlabs(workspace)
    reconcile.reconcile_run(workspace=workspace, engine=engine, days=1, until=DAY)
    day_url = reverse("billing:reconcile_day", args=["2025-03-10"])
    for user in (member, viewer):
        assert client_as(user).get(reverse("billing:reconcile")).status_code == 403
        assert client_as(user).get(day_url).status_code == 403
        assert client_as(user).post(reverse("billing:reconcile_run")).status_code == 403
    assert client_as(outsider).get(day_url).status_code == 404  # their workspace has no such day
    anonymous = client_as(None).get(reverse("billing:reconcile"))
    assert anonymous.status_code == 302 and "/accounts/login/" in anonymous["Location"]


def test_a_malformed_day_is_404_and_the_wrong_method_405(client_as, manager, workspace):
    assert (
        client_as(manager).get(reverse("billing:reconcile_day", args=["2025-13-40"])).status_code
        == 404
    )
    assert client_as(manager).post(reverse("billing:reconcile")).status_code == 405
    assert client_as(manager).get(reverse("billing:reconcile_run")).status_code == 405


def test_check_now_queues_the_task_after_the_commit(
    client_as, manager, workspace, django_capture_on_commit_callbacks
):
    _on_elevenlabs(workspace)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client_as(manager).post(reverse("billing:reconcile_run"))
    assert response.status_code == 303 and response["Location"] == reverse("billing:reconcile")
    assert len(callbacks) == 1

    # Pressed again at once: nothing more is queued, and the page says why.
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        again = client_as(manager).post(reverse("billing:reconcile_run"), follow=True)
    assert not callbacks and "A check started less than five minutes ago" in again.content.decode()
