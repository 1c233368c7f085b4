"""Fifty simultaneous ``POST /v1/text-to-speech/{voice}`` calls through a real Daphne against
a member budget that covers ten: exactly ten are served and billed, the rest are refused with
429 ``quota_exceeded`` naming the budget, and every report of usage agrees with the ledger."""

import threading
from collections import Counter
from decimal import Decimal

import httpx
import pytest

from apps.billing.models import Budget, UsageEvent, UsageStatus
from apps.billing.services import member_usage, workspace_usage
from apps.gateway import services
from apps.workspaces.services import engine_settings_update
from tests.gateway.test_api_faults import AUDIO, FakeElevenLabs

pytestmark = pytest.mark.slow

VOICE = "21m00Tcm4TlvDq8ikWAM"
TEXT = "Fifty callers, one budget, ten voices."  # 38 characters: 38 credits a call
CALLS, SERVED = 50, 10
BUDGET = SERVED * len(TEXT)  # 380 credits


@pytest.fixture
def uncapped(live_env):
    """No concurrency cap (see test_api_concurrency_cap): this test is about the budget."""
    live_env["CHORUS_API_MAX_CONCURRENT"] = "0"


def test_fifty_concurrent_calls_against_a_budget_of_ten_serve_and_bill_exactly_ten(
    uncapped, daphne_server, workspace, owner, member
):
    # On the ElevenLabs engine a character costs a credit (the local engine is always free).
    with FakeElevenLabs() as fake:
        engine_settings_update(
            workspace=workspace, actor=owner, kind="elevenlabs", api_key="sk_upstream_test_key",
            base_url=fake.url,
        )  # fmt: skip
        Budget.objects.create(workspace=workspace, user=member, limit_credits=Decimal(BUDGET))
        issued = services.api_key_create(workspace=workspace, user=member, name="Load")
        start = threading.Barrier(CALLS)
        replies: list[tuple[int, bytes, dict, object]] = []
        lock = threading.Lock()

        def call():
            start.wait()
            response = httpx.post(
                f"{daphne_server.url}/v1/text-to-speech/{VOICE}",
                json={"text": TEXT},
                headers={"xi-api-key": issued.raw},
                timeout=60,
            )
            body = response.json() if response.status_code != 200 else None
            with lock:
                replies.append((response.status_code, response.content, response.headers, body))

        threads = [threading.Thread(target=call) for _ in range(CALLS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        upstream_calls = len(fake.requests)

    assert Counter(status for status, *_ in replies) == {200: SERVED, 429: CALLS - SERVED}, (
        daphne_server.proc.output()[-3000:]
    )
    assert upstream_calls == SERVED  # a refused call never reached the provider

    events = list(UsageEvent.objects.filter(workspace=workspace).order_by("id"))
    assert [(e.status, e.units, e.credits, e.upstream_credits) for e in events] == [
        (UsageStatus.SETTLED, Decimal(38), Decimal(38), Decimal(38))
    ] * SERVED  # refusals reserve nothing: no refunded, failed or reserved rows either
    assert sorted(e.upstream_request_id for e in events) == sorted(
        f"up-{n}" for n in range(1, SERVED + 1)
    )
    served = [headers for status, _, headers, _ in replies if status == 200]
    assert sorted(h["request-id"] for h in served) == sorted(e.request_id for e in events)
    assert {(h["character-cost"], body == AUDIO) for (s, body, h, _) in replies if s == 200} == {
        ("38", True)
    }

    refused = [(headers, body) for status, _, headers, body in replies if status == 429]
    for headers, body in refused:
        assert body == {
            "detail": {
                "type": "rate_limit_error",
                "code": "quota_exceeded",
                "message": "Mia Member's budget of 380 credits is spent: this needs 38 credits "
                "and 0 are left this period.",
                "status": "quota_exceeded",
                "request_id": headers["request-id"],
            }
        }
    assert len({headers["request-id"] for headers, _ in refused}) == CALLS - SERVED

    ledger = sum(e.credits for e in events)
    usage = member_usage(workspace=workspace, user=member)
    assert ledger == usage.used == workspace_usage(workspace=workspace) == Decimal(BUDGET)
    assert usage.left == Decimal(0)
    subscription = httpx.get(
        f"{daphne_server.url}/v1/user/subscription", headers={"xi-api-key": issued.raw}
    ).json()
    assert (subscription["character_count"], subscription["character_limit"]) == (BUDGET, BUDGET)
