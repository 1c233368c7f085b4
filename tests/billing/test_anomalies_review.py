"""The spend review's pages: the forecast summary, anomaly flags dismissed or acted on, the spend
settings; managers and owners only (members and viewers 403, another workspace's flag 404)."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.urls import reverse

from apps.billing.models import AnomalyFlag, AnomalyKind, AnomalyState, Plan, SpendSettings
from tests.conftest import HTMX


def flag_in(workspace, key="spike:1:2025-06-11", **values):
    start = datetime(2025, 6, 11, tzinfo=UTC)
    return AnomalyFlag.objects.create(
        workspace=workspace,
        kind=values.pop("kind", AnomalyKind.SPIKE),
        starts_at=values.pop("starts_at", start),
        ends_at=values.pop("ends_at", start + timedelta(days=1)),
        credits=Decimal(900),
        baseline=Decimal(100),
        detail=values.pop("detail", "Mia Member spent 900 credits on Wed 11 Jun"),
        key=key,
        **values,
    )


@pytest.fixture
def flag(workspace, member):
    return flag_in(workspace, user=member)


# --- The role matrix --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["review_index", "review_settings"])
def test_pages_are_for_managers_and_owners(client_as, owner, manager, member, viewer, name):
    url = reverse(f"billing:{name}")
    assert client_as(owner).get(url).status_code == 200
    assert client_as(manager).get(url).status_code == 200
    assert client_as(member).get(url).status_code == 403
    assert client_as(viewer).get(url).status_code == 403
    anonymous = client_as(None).get(url)
    assert anonymous.status_code == 302 and "/accounts/login/" in anonymous["Location"]


def test_deciding_is_for_managers_and_another_workspaces_flag_is_not_found(
    client_as, flag, member, viewer, outsider
):
    url = reverse("billing:review_decide", args=[flag.pk])
    data = {"action": "dismiss"}
    assert client_as(member).post(url, data).status_code == 403
    assert client_as(viewer).post(url, data).status_code == 403
    assert client_as(outsider).post(url, data).status_code == 404
    assert client_as(None).post(url, data).status_code == 302
    flag.refresh_from_db()
    assert flag.state == AnomalyState.OPEN


def test_deciding_takes_only_post(client_as, flag, manager):
    assert client_as(manager).get(reverse("billing:review_decide", args=[flag.pk])).status_code == (
        405
    )
    assert client_as(manager).delete(reverse("billing:review_index")).status_code == 405


def test_an_outsider_sees_only_their_own_workspaces_flags(client_as, flag, outsider):
    body = client_as(outsider).get(reverse("billing:review_index")).content.decode()
    assert "Mia Member spent" not in body and "No open flags" in body


# --- Flags --------------------------------------------------------------------------------------


def test_the_list_shows_open_flags_with_their_rows(client_as, flag, manager, member, workspace):
    flag_in(workspace, key="k2", detail="Done already", state=AnomalyState.DISMISSED)
    body = client_as(manager).get(reverse("billing:review_index")).content.decode()
    assert "Mia Member spent 900 credits" in body and "Done already" not in body
    assert f"spend/rows/?member={member.pk}&amp;from=2025-06-11&amp;to=2025-06-11" in body
    decided = client_as(manager).get(reverse("billing:review_index"), {"status": "decided"})
    assert "Done already" in decided.content.decode()
    assert "Mia Member spent" not in decided.content.decode()


def test_a_manager_dismisses_a_flag_with_htmx_and_it_shows_who(client_as, flag, manager):
    url = reverse("billing:review_decide", args=[flag.pk])
    response = client_as(manager, **HTMX).post(
        url + "?status=all", {"action": "dismiss", "note": "planned batch"}
    )
    body = response.content.decode()
    assert response.status_code == 200 and "<html" not in body and 'id="anomaly-flags"' in body
    assert "Dismissed</span> by Max Manager" in body and "planned batch" in body
    flag.refresh_from_db()
    assert (flag.state, flag.decided_by, flag.note) == (
        AnomalyState.DISMISSED,
        manager,
        "planned batch",
    )


def test_acting_needs_a_note_and_a_decided_flag_is_not_decided_again(client_as, flag, owner):
    url = reverse("billing:review_decide", args=[flag.pk])
    bad = client_as(owner).post(url, {"action": "act", "note": ""})
    assert bad.status_code == 400 and "Say what was done" in bad.content.decode()
    wrong = client_as(owner, **HTMX).post(url, {"action": "explode"})
    assert wrong.status_code == 400 and "Choose Dismiss or Acted on" in wrong.content.decode()
    done = client_as(owner).post(url, {"action": "act", "note": "Budget lowered"})
    assert done.status_code == 303 and done["Location"] == reverse("billing:review_index")
    flag.refresh_from_db()
    assert (flag.state, flag.decided_by, flag.note) == (AnomalyState.ACTED, owner, "Budget lowered")
    again = client_as(owner).post(url, {"action": "dismiss"})
    assert again.status_code == 400
    assert "already acted on by Olive Owner" in again.content.decode()


# --- The forecast summary -------------------------------------------------------------------------


def test_the_page_says_where_the_period_is_heading(client_as, manager, workspace):
    Plan.objects.create(workspace=workspace, credit_limit=5000, workspace_cap=Decimal(4000))
    body = client_as(manager).get(reverse("billing:review_index")).content.decode()
    assert "Forecast to the reset" in body and "within its limits" in body
    assert "1.75× (the budget rule: no project has a final take yet)" in body
    assert 'data-forecast-ratio="seed"' in body


# --- Settings -----------------------------------------------------------------------------------

GOOD = {
    "anomaly_factor": "2.5",
    "time_zone": "Europe/Paris",
    "work_start_hour": "9",
    "work_end_hour": "18",
    "work_days": ["0", "1", "2", "3"],
    "off_hours_credits": "500",
    "threshold_music": "2000",
    "threshold_dubbing": "",
}


def test_a_manager_saves_the_spend_settings(client_as, manager, workspace):
    response = client_as(manager).post(reverse("billing:review_settings"), GOOD)
    assert response.status_code == 303
    row = SpendSettings.objects.get(workspace=workspace)
    assert (row.anomaly_factor, row.time_zone, row.work_start_hour, row.work_end_hour) == (
        Decimal("2.5"),
        "Europe/Paris",
        9,
        18,
    )
    assert (row.work_days, row.off_hours_credits) == ("0123", Decimal(500))
    assert row.job_thresholds == {"music": "2000"}
    page = client_as(manager).get(reverse("billing:review_settings")).content.decode()
    assert 'value="Europe/Paris"' in page and 'value="2000"' in page


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"anomaly_factor": "1"}, "greater than or equal to 1.1"),
        ({"anomaly_factor": "abc"}, "Enter a number"),
        ({"time_zone": "Mars/Olympus"}, "is not a time zone: use a name such as Europe/Paris"),
        ({"time_zone": "localtime"}, "is not a time zone: use a name such as Europe/Paris"),
        ({"time_zone": "posixrules"}, "is not a time zone: use a name such as Europe/Paris"),
        ({"work_start_hour": "18", "work_end_hour": "9"}, "Working hours end after they start"),
        ({"work_start_hour": "25"}, "less than or equal to 23"),
        ({"work_days": ["7"]}, "Select a valid choice"),
        ({"off_hours_credits": "-1"}, "greater than or equal to 0"),
        ({"threshold_music": "-5"}, "greater than or equal to 0"),
    ],
)
def test_bad_settings_are_refused_with_a_message(client_as, manager, workspace, change, message):
    response = client_as(manager).post(reverse("billing:review_settings"), {**GOOD, **change})
    assert response.status_code == 400
    assert message in response.content.decode()
    assert SpendSettings.objects.get(workspace=workspace).time_zone == "UTC"  # unchanged


def test_members_cannot_change_the_settings(client_as, member, viewer, workspace):
    assert client_as(member).post(reverse("billing:review_settings"), GOOD).status_code == 403
    assert client_as(viewer).post(reverse("billing:review_settings"), GOOD).status_code == 403
    assert not SpendSettings.objects.filter(workspace=workspace, time_zone="Europe/Paris").exists()


def test_another_workspaces_settings_stay_apart(client_as, manager, outsider, workspace):
    client_as(outsider).post(reverse("billing:review_settings"), GOOD)
    assert not SpendSettings.objects.filter(workspace=workspace, time_zone="Europe/Paris").exists()
    assert SpendSettings.objects.filter(time_zone="Europe/Paris").count() == 1


def test_the_flag_list_is_a_partial_for_htmx_and_a_page_otherwise(client_as, flag, manager):
    url = reverse("billing:review_index")
    partial = client_as(manager, **HTMX).get(url, {"status": "open"}).content.decode()
    assert "<html" not in partial and partial.lstrip().startswith(
        '<section class="card" id="anomaly-flags"'
    )
    assert "Forecast to the reset" not in partial and "Mia Member spent" in partial
    page = client_as(manager).get(url).content.decode()
    assert "<html" in page and "Forecast to the reset" in page and "Mia Member spent" in page


def test_a_flags_link_lists_its_members_rows_in_the_explorer(client_as, manager, member, workspace):
    from django.utils import timezone

    from apps.billing import anomalies, services

    def spend(user, units):
        with services.metered(
            workspace=workspace,
            user=user,
            capability="tts",
            engine="elevenlabs",
            model_id="eleven_multilingual_v2",
            units=units,
        ) as meter:
            meter.settle(units=units)

    spend(member, 120)
    spend(member, 80)
    spend(manager, 999)
    today = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    flag = flag_in(workspace, user=member, starts_at=today, ends_at=today + timedelta(days=1))
    response = client_as(manager).get(anomalies.flag_rows_url(flag))
    body = response.content.decode()
    assert response.status_code == 200 and body.count("data-event=") == 2
    assert "999" not in body.split('id="spend-rows"')[1]
