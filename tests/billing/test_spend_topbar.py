"""The top bar says what is left this period: the member's budget, and for managers the
workspace (the tighter of its cap and the plan's credits), in at most two queries."""

import re
from decimal import Decimal

from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.billing import services
from apps.billing.models import Budget

from .test_spend_explorer import at_days_ago, price, spent


def _bar(client, url="/billing/usage/") -> str:
    html = client.get(url).content.decode()
    match = re.search(r"data-credits-left>(.*?)</a>", html, re.S)
    return re.sub(r"<[^>]+>", "", match.group(1)) if match else ""


def test_a_member_sees_what_is_left_of_their_budget(client_as, workspace, member):
    price(workspace)
    Budget.objects.create(workspace=workspace, user=member, limit_credits=Decimal(1000))
    spent(workspace, member, at=at_days_ago(0, hour=0), credits=250)
    bar = _bar(client_as(member))
    assert bar == "You: 750 credits left"  # no workspace figure for a member


def test_a_manager_sees_the_workspace_too_the_tighter_of_cap_and_plan(
    client_as, workspace, manager, member
):
    plan = price(workspace)
    plan.workspace_cap = Decimal(5000)
    plan.credit_limit = 100000
    plan.credits_used = 96000  # the plan is tighter: 4,000 left before this period's calls
    plan.save()
    Budget.objects.create(workspace=workspace, user=manager, limit_credits=Decimal(2000))
    spent(workspace, member, at=at_days_ago(0, hour=0), credits=300)
    spent(workspace, manager, at=at_days_ago(0, hour=0), credits=100)
    bar = _bar(client_as(manager))
    assert bar == "You: 1,900 credits left · Workspace: 3,600 left"


def test_no_budget_and_no_limit_say_nothing(client_as, workspace, member):
    assert _bar(client_as(member)) == ""


class _Silent:
    member = workspace = None

    def __init__(self, *args):
        pass


def test_the_top_bar_costs_at_most_two_queries(client_as, workspace, manager, monkeypatch):
    from apps.billing import context_processors

    plan = services.plan_for(workspace)
    plan.workspace_cap = Decimal(5000)
    plan.save()
    Budget.objects.create(workspace=workspace, user=manager, limit_credits=Decimal(2000))
    client = client_as(manager)
    client.get("/history/")

    def count():
        with CaptureQueriesContext(connection) as ctx:
            assert client.get("/history/").status_code == 200
        return len(ctx.captured_queries)

    shown = count()
    assert "Workspace: 5,000 left" in _bar(client, "/history/")
    monkeypatch.setattr(context_processors, "CreditsLeft", _Silent)
    assert shown - count() == 2
