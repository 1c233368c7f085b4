"""The forecast against the plan: a constructed ledger with exact numbers, the regeneration
ratio from projects (or the seed's 1.75×), the line, and the managers told once per period."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from apps.billing import forecast
from apps.billing.forecast import forecast_chart, forecast_for, forecast_notices_send
from apps.billing.models import (
    ForecastNotice,
    Notification,
    Plan,
    SpendRollup,
    UsageEvent,
    UsageStatus,
)
from apps.billing.tasks import forecast_notice_mail, forecasts_check
from apps.history.models import Generation
from apps.projects.models import Block, Chapter, Project, Take
from apps.workspaces.models import EngineSettings
from tests.factories import make_user, make_workspace

NOW = datetime(2025, 6, 11, tzinfo=UTC)  # 10 days into June, 20 days to the reset


def at(day, hour=0, minute=0, month=6):
    return datetime(2025, month, day, hour, minute, tzinfo=UTC)


def rolled(workspace, hour, credits, *, user=None, capability="tts", project=""):
    return SpendRollup.objects.create(
        workspace=workspace,
        hour=hour,
        user_id=user.pk if user else 0,
        capability=capability,
        model_id="eleven_multilingual_v2",
        project=project,
        source="ui",
        engine="elevenlabs",
        events=1,
        units=Decimal(credits),
        credits=Decimal(credits),
    )


@pytest.fixture
def plan(workspace):
    return Plan.objects.create(
        workspace=workspace, tier="creator", credit_limit=5000, workspace_cap=Decimal(3800)
    )


@pytest.fixture
def ledger(workspace, member, plan):
    """1,500 credits settled in June: 1,000 of it the base (speech and sound), 500 the speech
    of a project; around it, rows the period does not count."""
    rolled(workspace, at(1, 10), 600, user=member)
    rolled(workspace, at(5, 14), 400, user=member, capability="sound")
    rolled(workspace, at(8, 9), 500, user=member, project="p1")
    rolled(workspace, at(31, 23, month=5), 999, user=member)  # May: the last period
    rolled(workspace, at(11, 1), 777, user=member)  # after "now"
    rolled(make_workspace("Other"), at(3, 10), 888)
    return workspace


def take(block, *, draft, user=None):
    generation = Generation.objects.create(
        workspace=block.workspace, kind="tts", engine="local", file="x.mp3", content_type="audio"
    )
    return Take.objects.create(
        workspace=block.workspace, block=block, generation=generation, draft=draft, user=user
    )


@pytest.fixture
def project_history(workspace):
    """Three final takes for two blocks (ratio 1.5), one draft; 230 characters still without a
    final take: 200 at 1 credit (the project's model) and 30 on Eleven v3 at 2 credits."""
    project = Project.objects.create(workspace=workspace, name="Tales", default_voice_id="v")
    chapter = Chapter.objects.create(workspace=workspace, project=project, name="One")

    def block(length, **fields):
        return Block.objects.create(
            workspace=workspace, chapter=chapter, text="a" * length, **fields
        )

    done_twice, done_once = block(100), block(50)
    take(done_twice, draft=False)
    Block.objects.filter(pk=done_twice.pk).update(chosen=take(done_twice, draft=False))
    Block.objects.filter(pk=done_once.pk).update(chosen=take(done_once, draft=False))
    block(200)  # never rendered
    drafted = block(30, model_id="eleven_v3")
    Block.objects.filter(pk=drafted.pk).update(chosen=take(drafted, draft=True))
    block(40, locked=True)  # locked: never rendered again
    other = make_workspace("Elsewhere")
    other_project = Project.objects.create(workspace=other, name="X", default_voice_id="v")
    other_chapter = Chapter.objects.create(workspace=other, project=other_project, name="X")
    Block.objects.create(workspace=other, chapter=other_chapter, text="b" * 1000)
    return project


def on_elevenlabs(workspace):
    EngineSettings.objects.update_or_create(workspace=workspace, defaults={"kind": "elevenlabs"})


def test_the_projection_of_a_constructed_ledger_without_project_history(ledger):
    result = forecast_for(ledger, now=NOW)
    assert (result.period_start, result.period_end) == (at(1), at(1, month=7))
    assert result.spent == Decimal("1500.000")
    assert result.base_spent == Decimal("1000.000")
    assert result.burn_per_day == Decimal("100.000")  # 1,000 over 10 days
    assert result.days_left == Decimal(20)
    assert (result.ratio, result.ratio_source) == (Decimal("1.75"), "seed")
    assert "the budget rule" in result.ratio_text
    assert result.planned_credits == 0
    assert result.projected == Decimal("3500.000")  # 1,500 + 100 × 20
    assert (result.plan_limit, result.cap) == (Decimal(5000), Decimal(3800))
    assert result.crosses == ()


def test_the_measured_ratio_multiplies_the_remaining_project_work(ledger, project_history):
    on_elevenlabs(ledger)
    result = forecast_for(ledger, now=NOW)
    assert (result.ratio_takes, result.ratio_blocks) == (3, 2)
    assert (result.ratio, result.ratio_source) == (Decimal("1.50"), "projects")
    assert "measured in this team's projects (3 final takes for 2 blocks)" in result.ratio_text
    assert result.planned_characters == 230
    assert result.planned_credits == Decimal("260.000")  # 200 × 1 + 30 × 2
    # 1,500 spent + 100 a day × 20 days + 260 × 1.5
    assert result.projected == Decimal("3890.000")
    assert result.crosses == ("cap",)


def test_the_seed_rule_multiplies_the_work_where_no_block_has_a_final_take(ledger, workspace):
    on_elevenlabs(workspace)
    project = Project.objects.create(workspace=workspace, name="New", default_voice_id="v")
    chapter = Chapter.objects.create(workspace=workspace, project=project, name="One")
    block = Block.objects.create(workspace=workspace, chapter=chapter, text="a" * 400)
    Block.objects.filter(pk=block.pk).update(chosen=take(block, draft=True))
    result = forecast_for(workspace, now=NOW)
    assert (result.ratio, result.ratio_source, result.ratio_blocks) == (Decimal("1.75"), "seed", 0)
    assert result.planned_credits == Decimal("400.000")
    assert result.projected == Decimal("4200.000")  # 3,500 + 400 × 1.75


def test_work_on_the_local_engine_costs_nothing_to_come(ledger, project_history):
    result = forecast_for(ledger, now=NOW)  # no engine settings: the local engine
    assert result.planned_characters == 230 and result.planned_credits == 0
    assert result.projected == Decimal("3500.000")


def test_the_line_is_measured_up_to_now_then_projected_to_the_reset(ledger):
    points = forecast_for(ledger, now=NOW).points
    by_time = {point.at: point for point in points}
    assert points[0].at == at(1) and points[0].credits == 0 and points[0].measured
    assert by_time[at(2)].credits == 600 and by_time[at(6)].credits == 1000
    assert by_time[at(9)].credits == 1500 and by_time[at(9)].measured
    assert [p.at for p in points].count(NOW) == 1  # now falls on a midnight: one point
    assert by_time[at(21)].credits == Decimal("2500.000") and not by_time[at(21)].measured
    assert points[-1].at == at(1, month=7) and points[-1].credits == Decimal("3500.000")
    assert [p.at for p in points] == sorted(p.at for p in points)


def test_the_chart_draws_the_same_line_in_the_viewers_zone(ledger):
    from zoneinfo import ZoneInfo

    result = forecast_for(ledger, now=NOW)
    chart = forecast.forecast_chart(result, ZoneInfo("Europe/Berlin"))
    count = len(result.points)
    assert len(chart["labels"]) == len(chart["measured"]) == len(chart["projected"]) == count
    assert chart["labels"][0] == "01 Jun 02:00"  # midnight UTC, 02:00 in Berlin's summer
    now = [p.at for p in result.points].index(NOW)
    # Measured up to now, projected from now: both hold now's point, so the lines meet.
    assert chart["measured"][now] == chart["projected"][now] == "1500.000"
    assert all(v is None for v in chart["measured"][now + 1 :])
    assert all(v is None for v in chart["projected"][:now])
    assert chart["projected"][-1] == "3500.000"
    assert (chart["plan"], chart["cap"]) == ("5000", "3800.000")
    assert "the budget rule" in chart["ratio"]


def test_the_first_hours_of_a_period_do_not_project_a_spike(workspace, plan):
    rolled(workspace, at(1, 2), 300)
    result = forecast_for(workspace, now=at(1, 6))
    assert result.burn_per_day == Decimal(300)  # over a day, not a quarter of one
    assert result.projected == Decimal("9225.000")  # 300 + 300 × 29.75 days left


def test_a_plan_cycle_that_starts_within_an_hour_counts_only_its_part(workspace, member):
    Plan.objects.create(
        workspace=workspace, credit_limit=1000, budget_period="plan", next_reset_at=at(20, 10, 30)
    )

    def settled(when, credits):
        event = UsageEvent.objects.create(
            workspace=workspace,
            user=member,
            source="ui",
            capability="tts",
            engine="elevenlabs",
            unit="character",
            estimated_units=credits,
            estimated_credits=credits,
            credits=credits,
            status=UsageStatus.SETTLED,
            request_id="r",
            idempotency_key=f"k{when.isoformat()}",
        )
        UsageEvent.objects.filter(pk=event.pk).update(created_at=when)

    settled(at(20, 10, 15, month=5), 100)  # before the cycle's start, in the same hour
    settled(at(20, 10, 45, month=5), 40)
    rolled(workspace, at(20, 10, month=5), 140)  # that hour in the rollup: both rows
    rolled(workspace, at(20, 12, month=5), 60)
    result = forecast_for(workspace, now=at(30, month=5))
    assert (result.period_start, result.period_end) == (at(20, 10, 30, month=5), at(20, 10, 30))
    assert result.spent == Decimal(100)  # 40 of the first hour's part, 60 after


def test_managers_are_told_once_per_period_in_app_and_by_mail(
    ledger, project_history, owner, manager, member, django_capture_on_commit_callbacks
):
    on_elevenlabs(ledger)
    with django_capture_on_commit_callbacks() as callbacks:
        sent = forecast_notices_send(ledger, now=NOW)
    assert [(n.kind, n.projected, n.limit) for n in sent] == [
        ("cap", Decimal("3890.000"), Decimal(3800))
    ]
    assert len(callbacks) == 1  # the e-mail goes to a Celery task after the commit
    told = Notification.objects.filter(workspace=ledger)
    assert sorted(n.user.email for n in told) == sorted([owner.email, manager.email])
    assert "3,890 credits projected by the reset on 1 Jul 2025, over the workspace cap" in (
        told.first().text
    )
    assert forecast_notice_mail(sent[0].pk) == 2
    assert [m.to for m in mail.outbox] == [[e] for e in sorted([owner.email, manager.email])]
    assert "over the workspace cap of 3,800" in mail.outbox[0].body

    with django_capture_on_commit_callbacks() as callbacks:
        assert forecast_notices_send(ledger, now=NOW + timedelta(days=3)) == []
    assert callbacks == [] and told.count() == 2

    # The next period: told again when it crosses again.
    rolled(ledger, at(2, 10, month=7), 260, user=member)  # 260 + 130 × 29 + 390: over the cap
    with django_capture_on_commit_callbacks():
        again = forecast_notices_send(ledger, now=at(3, month=7))
    assert [n.kind for n in again] == ["cap"]
    assert ForecastNotice.objects.filter(workspace=ledger).count() == 2
    assert forecast_notice_mail(10**9) == 0  # a notice gone: nothing sent


def test_a_projection_over_the_plan_tells_of_the_plan(workspace, plan, manager):
    Plan.objects.filter(pk=plan.pk).update(workspace_cap=None, credit_limit=2000)
    rolled(workspace, at(1, 10), 1000)
    sent = forecast_notices_send(workspace, now=NOW)
    assert [n.kind for n in sent] == ["plan"]
    assert "over the plan's credits of 2,000" in Notification.objects.get(user=manager).text


def test_the_periodic_check_looks_only_at_workspaces_with_a_limit(ledger, manager, db):
    unlimited = make_workspace("No limits", owner=make_user())
    Plan.objects.create(workspace=unlimited)
    rolled(unlimited, at(1, 10), 10**6)
    assert list(forecast.workspaces_to_forecast()) == [ledger]
    Plan.objects.filter(workspace=ledger).update(workspace_cap=Decimal(100), credit_limit=10**9)
    this_hour = timezone.now().replace(minute=0, second=0, microsecond=0)
    rolled(ledger, this_hour, 200)  # the task runs at the real now
    assert forecasts_check() == 1
    assert ForecastNotice.objects.get().kind == "cap"
    assert forecasts_check() == 0


def test_the_spend_page_loads_the_forecast_for_managers_only(ledger, manager, member, client_as):
    page = client_as(manager).get(reverse("billing:spend")).content.decode()
    assert f'hx-get="{reverse("billing:spend_forecast")}"' in page
    answer = client_as(manager).get(reverse("billing:spend_forecast"), headers={"HX-Request": "1"})
    assert answer.status_code == 200
    body = answer.content.decode()
    assert 'id="forecast-data"' in body and "Forecast to the reset" in body
    own = client_as(member).get(reverse("billing:spend")).content.decode()
    assert 'id="spend-forecast"' not in own  # the workspace's projection is for managers
    assert client_as(member).get(reverse("billing:spend_forecast")).status_code == 403


def test_credits_the_provider_counts_outside_chorus_count_against_the_plan(ledger, plan):
    """The account is shared: calls made outside Chorus show in the provider's synced
    ``credits_used`` but not in the ledger. They go against the plan's credits (the
    provider's count), not against the workspace cap (Chorus's own spend)."""
    plan.source, plan.budget_period = "elevenlabs", "plan"
    plan.next_reset_at, plan.synced_at = at(1, month=7), at(10)
    plan.credits_used = 1500 + 1600  # the ledger's 1,500 and 1,600 spent elsewhere
    plan.save()
    result = forecast_for(ledger, now=NOW)
    assert result.projected == Decimal("3500.000")  # the ledger's projection, as before
    assert result.outside == Decimal("1600.000")
    assert result.projected_on_plan == Decimal("5100.000")
    assert result.crosses == ("plan",)  # 5,100 > 5,000; the cap (3,800) sees only 3,500
    chart = forecast_chart(result, UTC)
    assert chart["plan"] == "3400.000" and "1,600 used outside Chorus" in chart["planLabel"]
    # The count is a snapshot: Chorus's spend after the sync (500 on the 8th) is not taken
    # from it. Synced on the 6th: 1,000 billed by Chorus by then, 1,600 elsewhere.
    plan.synced_at, plan.credits_used = at(6), 1000 + 1600
    plan.save()
    assert forecast_for(ledger, now=NOW).outside == Decimal("1600.000")
    # A sync from before the period says nothing about it; on a calendar month, neither.
    plan.synced_at = at(28, month=5)
    plan.save()
    assert forecast_for(ledger, now=NOW).outside == 0
    plan.synced_at, plan.budget_period = at(10), "month"
    plan.save()
    assert forecast_for(ledger, now=NOW).outside == 0
