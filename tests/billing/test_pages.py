"""Billing pages: my usage, budgets, the plan and its sync, the rate card, notifications."""

from decimal import Decimal

from django.urls import reverse

from apps.billing import services
from apps.billing.models import Budget, Notification, Plan, RateCard
from apps.workspaces.models import AuditEntry, Membership
from tests.conftest import HTMX, free_port

TTS = {"capability": "tts", "engine": "elevenlabs", "model_id": "eleven_multilingual_v2"}


def _spend(workspace, user, units):
    with services.metered(workspace=workspace, user=user, units=units, **TTS) as meter:
        meter.settle(units=units)


def test_my_usage_shows_credits_budget_and_calls(client_as, member, workspace):
    page = client_as(member).get(reverse("billing:usage")).content.decode()
    assert "Nothing yet" in page and "No budget is set" in page
    Budget.objects.create(workspace=workspace, user=member, limit_credits=Decimal(1000))
    _spend(workspace, member, 250)
    page = client_as(member).get(reverse("billing:usage")).content.decode()
    assert "25% of your budget of 1,000 credits" in page
    assert "eleven_multilingual_v2" in page and "Settled" in page


def test_a_manager_sets_a_budget_with_htmx_and_it_is_audited(client_as, manager, member, workspace):
    target = Membership.objects.get(workspace=workspace, user=member)
    url = reverse("billing:budget_set", args=[target.pk])
    response = client_as(manager, **HTMX).post(url, {"limit_credits": "5000"})
    body = response.content.decode()
    assert response.status_code == 200 and "<html" not in body and 'id="budget-table"' in body
    assert Budget.objects.get(user=member).limit_credits == Decimal(5000)
    assert AuditEntry.objects.get(action="budget.changed").data == {"from": None, "to": "5000"}
    bad = client_as(manager, **HTMX).post(url, {"limit_credits": "-5"})
    assert bad.status_code == 400 and "greater than or equal to 0" in bad.content.decode()
    client_as(manager).post(url, {"limit_credits": ""})
    assert not Budget.objects.filter(user=member).exists()


def test_members_see_only_their_own_budget(client_as, member, manager, workspace):
    body = client_as(member).get(reverse("billing:budgets")).content.decode()
    assert "member@example.com" in body and "manager@example.com" not in body
    assert "<form" not in body.split('id="budget-table"')[1]


def test_owners_set_the_period_and_a_workspace_cap(client_as, owner, workspace):
    response = client_as(owner).post(
        reverse("billing:plan"), {"budget_period": "plan", "workspace_cap": "20000"}
    )
    assert response.status_code == 303
    plan = Plan.objects.get(workspace=workspace)
    assert (plan.budget_period, plan.workspace_cap) == ("plan", Decimal(20000))
    bad = client_as(owner).post(reverse("billing:plan"), {"budget_period": "weekly"})
    assert bad.status_code == 400


def test_sync_now_on_the_local_engine_keeps_a_virtual_plan(client_as, manager, workspace):
    page = client_as(manager).post(reverse("billing:plan_sync"), follow=True).content.decode()
    assert "Plan synced" in page
    assert Plan.objects.get(workspace=workspace).source == "virtual"


def test_sync_now_reports_an_unreachable_provider(client_as, owner, manager, workspace):
    from apps.workspaces import services as workspace_services

    workspace_services.engine_settings_update(
        workspace=workspace,
        actor=owner,
        kind="elevenlabs",
        api_key="sk_test_0123456789",
        base_url=f"http://127.0.0.1:{free_port()}",
    )
    page = client_as(manager).post(reverse("billing:plan_sync"), follow=True).content.decode()
    assert "did not answer" in page
    assert Plan.objects.get(workspace=workspace).sync_error


def test_owners_override_a_rate_and_reset_it(client_as, owner, workspace):
    client = client_as(owner)
    data = {"capability": "tts", "model_id": "", "unit": "character", "credits_per_unit": "0.5"}
    assert client.post(reverse("billing:rates"), data).status_code == 303
    row = RateCard.objects.get(workspace=workspace)
    assert services.usage_estimate(workspace=workspace, user=owner, units=100, **TTS).credits == 50
    bad = client.post(reverse("billing:rates"), {**data, "model_id": "bad id!"})
    assert bad.status_code == 400 and "letters, digits" in bad.content.decode()
    assert client.post(reverse("billing:rate_reset", args=[row.pk])).status_code == 303
    assert not RateCard.objects.exists()
    assert AuditEntry.objects.filter(action__in=["rate.changed", "rate.reset"]).count() == 2


def test_notifications_show_unread_and_can_be_marked_read(client_as, member, workspace):
    Notification.objects.create(workspace=workspace, user=member, text="You used 80%.")
    client = client_as(member)
    home = client.get(reverse("workspaces:home")).content.decode()
    assert "Notifications: 1 unread" in home
    assert "You used 80%." in client.get(reverse("billing:notifications")).content.decode()
    client.post(reverse("billing:notifications"))
    assert not Notification.objects.filter(read_at__isnull=True).exists()
