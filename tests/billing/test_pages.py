"""Billing pages: my usage, budgets, the plan and its sync, the rate card, notifications."""

from decimal import Decimal

import pytest
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
    assert "Eleven Multilingual v2" in page and "eleven_multilingual_v2" not in page
    assert "Settled" in page


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


# --- Human words (issue 14): plural units, capability names, one date format, empty states --


def test_usage_rows_speak_human(client_as, member, workspace):
    from datetime import UTC, datetime

    from apps.billing.models import UsageEvent

    _spend(workspace, member, 25)
    _spend(workspace, member, 1)
    UsageEvent.objects.filter(workspace=workspace).update(
        created_at=datetime(2026, 3, 4, 9, 30, tzinfo=UTC)
    )
    page = client_as(member).get(reverse("billing:usage")).content.decode()
    rows = page.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    assert "25 characters" in rows and "1 character<" in rows
    assert "25 character<" not in rows
    assert "Text to speech" in rows and ">tts<" not in rows and "tts " not in rows
    assert "ElevenLabs" in rows and ">elevenlabs<" not in rows
    assert "4 Mar 2026, 09:30" in rows


def test_the_rate_card_names_capabilities_and_units(client_as, viewer, workspace):
    page = client_as(viewer).get(reverse("billing:rates")).content.decode()
    table = page.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    assert "<td>Live transcription</td>" in table and "<td>stt_realtime</td>" not in table
    assert "1,273 credits per hour" in table and "2 credits per character" in table
    assert "Only an owner sets" in page


def test_the_rate_form_uses_the_one_field_style(client_as, owner, workspace):
    page = client_as(owner).get(reverse("billing:rates")).content.decode()
    assert '<label for="id_credits_per_unit">Credits per unit</label>' in page
    assert '<option value="hour">per hour</option>' in page
    bad = client_as(owner).post(
        reverse("billing:rates"), {"capability": "tts", "unit": "hour", "credits_per_unit": "-1"}
    )
    body = bad.content.decode()
    assert bad.status_code == 400
    assert 'aria-invalid="true"' in body and 'id="id_credits_per_unit_error"' in body


def test_the_plan_shows_dates_and_counts_in_words(client_as, manager, workspace):
    from datetime import UTC, datetime

    plan = services.plan_for(workspace)
    Plan.objects.filter(pk=plan.pk).update(
        credit_limit=10000, credits_used=2500, synced_at=datetime(2026, 5, 1, 8, 0, tzinfo=UTC)
    )
    page = client_as(manager).get(reverse("billing:plan")).content.decode()
    assert "2,500 used of 10,000 credits" in page
    assert "1 May 2026, 08:00" in page
    assert "Only an owner" in page


@pytest.mark.parametrize(
    "role, says, link",
    [("member", "Every generation you make", "/voices/"), ("viewer", "As a viewer", None)],
)
def test_an_empty_usage_page_says_what_to_do_next_per_role(client_as, request, role, says, link):
    page = client_as(request.getfixturevalue(role)).get(reverse("billing:usage")).content.decode()
    empty = page.split('<div class="empty">', 1)[1].split("</div>", 1)[0]
    assert says in empty
    assert ('href="/voices/"' in empty) is (link is not None)


def test_a_member_without_a_budget_reads_why(client_as, member, workspace):
    page = client_as(member).get(reverse("billing:budgets")).content.decode()
    assert "No budget: the workspace's plan applies" in page
    assert ">none<" not in page
