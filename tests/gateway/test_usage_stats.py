"""``GET /v1/usage/character-stats`` from the ledger: a personal key sees its member, a
manager's key the workspace; every series is the sum of the settled ledger rows behind it;
the official SDK reads it."""

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.test import Client
from elevenlabs.client import ElevenLabs

from apps.billing.models import UsageEvent, UsageStatus
from apps.billing.rollup import rollup_rebuild
from apps.gateway import services

from .openapi_check import assert_matches

START = datetime(2025, 3, 3, tzinfo=UTC)  # a Monday
URL = "/v1/usage/character-stats"


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _row(workspace, user, at, credits, *, status=UsageStatus.SETTLED, key=None, **more):
    fields = {
        "source": "api" if key else "ui",
        "capability": "tts",
        "engine": "elevenlabs",
        "model_id": "eleven_multilingual_v2",
        "voice_id": "voice_a",
        "unit": "character",
        **more,
    }
    event = UsageEvent.objects.create(
        workspace=workspace,
        user=user,
        api_key_id=key.pk if key else None,
        estimated_units=credits,
        units=credits,
        estimated_credits=credits,
        credits=credits if status == UsageStatus.SETTLED else Decimal(0),
        money=Decimal(credits) * Decimal("0.0002"),
        request_id=uuid.uuid4().hex,
        idempotency_key=uuid.uuid4().hex,
        status=status,
        **fields,
    )
    UsageEvent.objects.filter(pk=event.pk).update(created_at=at)
    return event


@pytest.fixture
def keys(workspace, member, manager):
    return {
        "member": services.api_key_create(workspace=workspace, user=member, name="Mine"),
        "manager": services.api_key_create(workspace=workspace, user=manager, name="Boss"),
    }


@pytest.fixture
def ledger(workspace, member, manager, viewer, keys, outsider):
    """A week of rows: the member's (studio and through their key, two voices, a refund, a
    failure, an open reservation), the manager's, and another workspace's."""
    key = keys["member"].api_key
    rows = [
        _row(workspace, member, START + timedelta(hours=9), 100),
        _row(workspace, member, START + timedelta(hours=9, minutes=30), 50, key=key),
        _row(workspace, member, START + timedelta(days=1, hours=23), 7, voice_id="voice_b"),
        _row(workspace, member, START + timedelta(days=2), 30, status=UsageStatus.REFUNDED),
        _row(workspace, member, START + timedelta(days=2), 30, status=UsageStatus.FAILED),
        _row(workspace, member, START + timedelta(days=2), 30, status=UsageStatus.RESERVED),
        _row(workspace, member, START + timedelta(days=3, hours=5), 12.5, capability="music",
             unit="generation", model_id="music_v1", voice_id=""),
        _row(workspace, manager, START + timedelta(days=1, hours=2), 1000),
        _row(workspace, manager, START + timedelta(days=6, hours=23, minutes=59), 3),
    ]  # fmt: skip
    elsewhere = outsider.memberships.get().workspace
    _row(elsewhere, outsider, START + timedelta(hours=9), 5000)
    rollup_rebuild()
    return rows


def _get(raw, **params):
    return Client(HTTP_XI_API_KEY=raw).get(URL, params)


def _week(raw, **params):
    return _get(raw, start_unix=_ms(START), end_unix=_ms(START + timedelta(days=7)) - 1, **params)


def _settled(rows, **match):
    return [
        r
        for r in rows
        if r.status == UsageStatus.SETTLED and all(getattr(r, k) == v for k, v in match.items())
    ]


def test_a_personal_key_sees_its_members_credits_per_day(keys, ledger, member):
    response = _week(keys["member"].raw)
    assert response.status_code == 200, response.content
    body = response.json()
    assert_matches(body, URL)
    assert body["time"] == [_ms(START + timedelta(days=n)) for n in range(7)]
    mine = _settled(ledger, user=member)
    # created_at was changed in the database: read it back
    mine = [UsageEvent.objects.get(pk=r.pk) for r in mine]
    expected = [
        float(sum((r.credits for r in mine if (r.created_at - START).days == n), Decimal(0)))
        for n in range(7)
    ]
    assert body["usage"] == {"All": expected}
    assert expected == [150.0, 7.0, 0.0, 12.5, 0.0, 0.0, 0.0]


def test_a_managers_key_with_workspace_metrics_sees_every_member(keys, ledger, member, manager):
    body = _week(
        keys["manager"].raw, include_workspace_metrics="true", breakdown_type="user"
    ).json()
    assert body["usage"] == {
        "manager@example.com": [0.0, 1000.0, 0.0, 0.0, 0.0, 0.0, 3.0],
        "member@example.com": [150.0, 7.0, 0.0, 12.5, 0.0, 0.0, 0.0],
    }
    whole = _week(keys["manager"].raw, include_workspace_metrics="true").json()
    assert sum(whole["usage"]["All"]) == float(sum(r.credits for r in _settled(ledger)))
    own = _week(keys["manager"].raw).json()  # without the flag: the manager's own
    assert own["usage"]["All"] == [0.0, 1000.0, 0.0, 0.0, 0.0, 0.0, 3.0]


def test_a_members_key_cannot_see_the_workspace(keys, ledger):
    response = _week(keys["member"].raw, include_workspace_metrics="true")
    detail = response.json()["detail"]
    assert response.status_code == 403 and detail["code"] == "workspace_metrics_not_allowed"
    assert "manager" in detail["message"]


@pytest.mark.parametrize(
    "params,expected",
    [
        ({"metric": "request_count"}, {"All": [2.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0]}),
        ({"metric": "tts_characters"}, {"All": [150.0, 7.0, 0.0, 0.0, 0.0, 0.0, 0.0]}),
        (
            {"metric": "fiat_units_spent"},
            {"All": [0.03, 0.0014, 0.0, 0.0025, 0.0, 0.0, 0.0]},
        ),
        (
            {"breakdown_type": "voice"},
            {
                "none": [0.0, 0.0, 0.0, 12.5, 0.0, 0.0, 0.0],
                "voice_a": [150.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
                "voice_b": [0.0, 7.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            },
        ),
        (
            {"breakdown_type": "product_type"},
            {
                "music": [0.0, 0.0, 0.0, 12.5, 0.0, 0.0, 0.0],
                "tts": [150.0, 7.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            },
        ),
        (
            {"breakdown_type": "request_source"},
            {
                "api": [50.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
                "studio": [100.0, 7.0, 0.0, 12.5, 0.0, 0.0, 0.0],
            },
        ),
        ({"aggregation_interval": "cumulative"}, {"All": [169.5]}),
        ({"aggregation_interval": "week"}, {"All": [169.5]}),
        ({"aggregation_interval": "month"}, {"All": [169.5]}),
        ({"aggregation_bucket_size": str(2 * 86400)}, {"All": [157.0, 12.5, 0.0, 0.0]}),
    ],
)
def test_metrics_breakdowns_and_intervals(keys, ledger, params, expected):
    response = _week(keys["member"].raw, **params)
    assert response.status_code == 200, response.content
    body = response.json()
    assert_matches(body, URL)
    assert set(body["usage"]) == set(expected)
    for name, series in expected.items():
        assert body["usage"][name] == pytest.approx(series), name
    assert all(len(series) == len(body["time"]) for series in body["usage"].values())


def test_keys_are_named_in_the_api_keys_breakdown(keys, ledger):
    body = _week(keys["member"].raw, breakdown_type="api_keys").json()
    prefix = keys["member"].api_key.prefix
    assert set(body["usage"]) == {"no API key", f"Mine ({prefix}…)"}
    assert body["usage"][f"Mine ({prefix}…)"][0] == 50.0


def test_hours_start_at_the_window_start(keys, ledger):
    start = START + timedelta(hours=9, minutes=10)
    body = _get(
        keys["member"].raw,
        start_unix=_ms(start),
        end_unix=_ms(START + timedelta(hours=11)),
        aggregation_interval="hour",
    ).json()
    # The first bucket is the hour the window starts in (Chorus keeps hours), said as the start.
    assert body["time"] == [
        _ms(start),
        _ms(START + timedelta(hours=10)),
        _ms(START + timedelta(hours=11)),
    ]
    assert body["usage"]["All"] == [150.0, 0.0, 0.0]


def test_an_empty_window_has_an_axis_of_zeros(keys, ledger):
    later = START + timedelta(days=60)
    body = _get(
        keys["member"].raw, start_unix=_ms(later), end_unix=_ms(later + timedelta(days=1))
    ).json()
    assert body == {
        "time": [_ms(later), _ms(later + timedelta(days=1))],
        "usage": {"All": [0.0, 0.0]},
    }


@pytest.mark.parametrize(
    "params,status,where",
    [
        ({}, 422, ["query", "start_unix"]),
        ({"start_unix": "soon", "end_unix": "1"}, 422, ["query", "start_unix"]),
        ({"start_unix": "5000", "end_unix": "1000"}, 422, ["query", "end_unix"]),
        ({"breakdown_type": "user"}, 422, ["query", "breakdown_type"]),
        ({"breakdown_type": "flavour"}, 422, ["query", "breakdown_type"]),
        ({"aggregation_interval": "year"}, 422, ["query", "aggregation_interval"]),
        ({"aggregation_bucket_size": "900"}, 422, ["query", "aggregation_bucket_size"]),
        ({"include_workspace_metrics": "perhaps"}, 422, ["query", "include_workspace_metrics"]),
        ({"breakdown_type": "region"}, 400, "breakdown_type"),
        ({"metric": "ttfb_p95"}, 400, "metric"),
        (
            {"aggregation_interval": "hour", "end_unix": str(_ms(START + timedelta(days=800)))},
            400,
            "aggregation_interval",
        ),
    ],
)
def test_bad_queries_are_refused_with_a_reason(keys, params, status, where):
    query = {"start_unix": _ms(START), "end_unix": _ms(START + timedelta(days=1)), **params}
    query = {k: v for k, v in query.items() if params != {} or k not in ("start_unix", "end_unix")}
    response = _get(keys["member"].raw, **query)
    assert response.status_code == status, response.content
    body = response.json()
    if status == 422:
        assert where in [e["loc"] for e in body["detail"]]
    else:
        assert body["detail"]["param"] == where and body["detail"]["message"]


def test_the_key_is_checked(workspace, member, keys):
    assert Client().get(URL, {"start_unix": 0, "end_unix": 1}).status_code == 401
    narrow = services.api_key_create(workspace=workspace, user=member, name="TTS", scopes=["tts"])
    assert _get(narrow.raw, start_unix=0, end_unix=1).status_code == 403
    posted = Client(HTTP_XI_API_KEY=keys["member"].raw).post(URL)
    assert posted.status_code == 405


def test_the_answer_takes_a_constant_number_of_queries(
    keys, ledger, django_assert_max_num_queries, workspace, member
):
    for n in range(50):
        _row(workspace, member, START + timedelta(hours=n), 1, voice_id=f"voice_{n}")
    rollup_rebuild()
    _week(keys["member"].raw)  # a key's first call from an address also records the address
    with django_assert_max_num_queries(4):  # the key (and its role), the sums
        body = _week(keys["member"].raw, breakdown_type="voice").json()
    assert len(body["usage"]) == 53


@pytest.mark.slow
def test_the_official_sdk_reads_the_usage_of_its_calls(daphne_server, workspace, member):
    issued = services.api_key_create(workspace=workspace, user=member, name="SDK")
    sdk = ElevenLabs(base_url=daphne_server.url, api_key=issued.raw)
    text = "Counting what this sentence cost."
    b"".join(sdk.text_to_speech.convert("local-joe", text=text))
    now = datetime.now(UTC)
    stats = sdk.usage.get(
        start_unix=_ms(now - timedelta(days=1)),
        end_unix=_ms(now + timedelta(hours=1)),
        metric="tts_characters",
    )
    days = (now + timedelta(hours=1)).date() - (now - timedelta(days=1)).date()
    assert len(stats.time) == len(stats.usage["All"]) == days.days + 1
    assert stats.usage["All"][-1 if days.days == 1 else -2] == len(text) == sum(stats.usage["All"])
    calls = sdk.usage.get(
        start_unix=_ms(now - timedelta(days=1)),
        end_unix=_ms(now + timedelta(hours=1)),
        metric="request_count",
        aggregation_interval="cumulative",
        breakdown_type="request_source",
    )
    assert calls.usage == {"api": [1.0]} and calls.time == [_ms(now - timedelta(days=1))]
