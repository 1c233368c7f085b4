"""Who sees what in the spend explorer: managers and owners the workspace, a member only their
own rows (whatever the URL asks), a viewer their own (none), an outsider nothing (404), and
anonymous people are sent to sign in."""

import re
from decimal import Decimal

import pytest

from apps.billing.models import UsageEvent, UsageStatus

from .test_spend_explorer import ledger, price, range_of  # noqa: F401

START, END = (d.isoformat() for d in range_of())
SPAN = {"from": START, "to": END}
PAGES = ("/billing/spend/", "/billing/spend/rows/", "/billing/spend/table.csv",
         "/billing/spend/rows.csv")  # fmt: skip


def _body(response) -> str:
    if hasattr(response, "streaming_content"):
        return b"".join(response.streaming_content).decode()
    return response.content.decode()


def _total(html: str) -> Decimal:
    footer = re.search(r'<tr data-row="total">.*?<td data-credits><strong>([\d.]+)', html, re.S)
    return Decimal(footer.group(1)) if footer else Decimal(0)


def _own(workspace, user) -> Decimal:
    rows = UsageEvent.objects.filter(workspace=workspace, user=user, status=UsageStatus.SETTLED)
    return sum((e.credits for e in rows), Decimal("0.000"))


@pytest.mark.usefixtures("ledger")
@pytest.mark.parametrize("role", ["owner", "manager"])
def test_owners_and_managers_see_the_whole_workspace(request, client_as, workspace, role):
    user = request.getfixturevalue(role)
    client = client_as(user)
    html = _body(client.get("/billing/spend/", {"by": "member", **SPAN}))
    everyone = UsageEvent.objects.filter(workspace=workspace, status=UsageStatus.SETTLED)
    assert _total(html) == sum(e.credits for e in everyone) > 0
    assert html.count('<tr data-row="') >= 4  # three people and the total
    for page in PAGES:
        assert client.get(page).status_code == 200


@pytest.mark.usefixtures("ledger")
def test_a_member_sees_only_their_own_rows_even_when_the_url_asks_for_another(
    client_as, workspace, owner, member
):
    client = client_as(member)
    mine = _own(workspace, member)
    assert 0 < mine < _own(workspace, owner) + mine
    for params in ({}, {"member": owner.pk}, {"member": [owner.pk, member.pk]}, {"member": "-"}):
        html = _body(client.get("/billing/spend/", {"by": "capability", **SPAN, **params}))
        assert _total(html) == mine, params
        assert "You see your own spend only" in html
        rows = _body(client.get("/billing/spend/rows/", {**SPAN, **params}))
        ids = {int(i) for i in re.findall(r'data-event="(\d+)"', rows)}
        assert ids and set(
            UsageEvent.objects.filter(pk__in=ids).values_list("user_id", flat=True)
        ) == {member.pk}
        raw = _body(client.get("/billing/spend/rows.csv", {**SPAN, **params})).splitlines()
        assert all("owner@example.com" not in line for line in raw)
        assert (
            len(raw) - 1
            == UsageEvent.objects.filter(
                workspace=workspace, user=member, status=UsageStatus.SETTLED
            ).count()
        )
    # Grouping by member does not reveal the others either.
    html = _body(client.get("/billing/spend/", {"by": "member", **SPAN}))
    assert re.findall(r'<tr data-row="([^"]+)"', html) == [str(member.pk), "total"]


@pytest.mark.usefixtures("ledger")
def test_a_viewer_sees_their_own_spend_which_is_none(client_as, workspace, viewer):
    client = client_as(viewer)
    html = _body(client.get("/billing/spend/", {"member": ""}))
    assert "No spend in this view" in html
    assert "data-event" not in _body(client.get("/billing/spend/rows/"))
    assert len(_body(client.get("/billing/spend/rows.csv")).splitlines()) == 1  # the header


@pytest.mark.usefixtures("ledger")
def test_an_outsider_sees_nothing_of_the_workspace_whatever_the_url(
    client_as, workspace, owner, outsider
):
    """The explorer names no workspace in its URLs: an outsider's pages are always their own
    workspace's; asking for a member of ours by id is refused, and no row of ours shows."""
    client = client_as(outsider)
    html = _body(client.get("/billing/spend/"))
    assert "Acme audio" not in html and "No spend in this view" in html
    response = client.get("/billing/spend/", {"member": owner.pk})
    assert response.status_code == 400
    assert "No such member in this workspace" in response.content.decode()
    assert client.get("/billing/spend/rows/", {"member": owner.pk}).status_code == 400
    assert "data-event" not in _body(client.get("/billing/spend/rows/"))
    assert len(_body(client.get("/billing/spend/rows.csv")).splitlines()) == 1


def test_an_outsider_in_no_workspace_is_sent_to_create_one(client_as, workspace):
    from tests.factories import make_user

    nobody = make_user("nobody@example.com")
    response = client_as(nobody).get("/billing/spend/")
    assert response.status_code == 302 and "/workspaces/new/" in response["Location"]


@pytest.mark.parametrize("page", PAGES)
def test_anonymous_people_are_sent_to_sign_in(client, page):
    response = client.get(page)
    assert response.status_code == 302
    assert "/accounts/login/" in response["Location"]


def test_the_time_zone_setting_needs_a_sign_in_and_a_post(client, client_as, viewer):
    assert client.post("/billing/spend/time-zone/", {"time_zone": "UTC"}).status_code == 302
    response = client_as(viewer).post("/billing/spend/time-zone/", {"time_zone": "Asia/Tokyo"})
    assert response.status_code == 303  # a viewer sets their own zone too
    viewer.refresh_from_db()
    assert viewer.time_zone == "Asia/Tokyo"
