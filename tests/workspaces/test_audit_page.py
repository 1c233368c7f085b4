"""The audit page in plain sentences: no action codes, JSON details, ``None`` or stale copy."""

import re

import pytest
from django.urls import reverse

from apps.workspaces.services import audit_record
from studio_site.format import when_of
from tests.conftest import HTMX

ENTRIES = [
    ("workspace.renamed", "New name", {"from": "Old", "to": "New name"}, "Renamed the workspace"),
    ("member.role_changed", "mia@example.com", {"from": "member", "to": "manager"},
     "Changed the role of mia@example.com from member to manager"),
    ("member.role_restored", "mia@example.com", {"from": "manager", "to": "member", "undoes": 3},
     "Undid a role change: mia@example.com is member again"),
    ("invitation.created", "new@example.com", {"role": "viewer", "replaced": 0},
     "Invited new@example.com as viewer"),
    ("invitation.accepted", "new@example.com", {"role": "member", "already_member": False},
     "Joined the workspace as member"),
    ("api_key.created", "Script (chorus_ab12…)", {"scopes": [], "cap": None},
     "Created the API key Script (chorus_ab12…)"),
    ("api_key.created", "Render (chorus_cd34…)", {"scopes": ["tts", "stt"], "cap": "25"},
     "Capabilities: Text to speech, Transcription"),
    ("api_key.revoked", "Script (chorus_ab12…)", {"owner": "mia@example.com"},
     "Owned by mia@example.com"),
    ("engine.changed", "elevenlabs",
     {"from": "local", "to": "elevenlabs", "base_url": "", "key_changed": True,
      "key_removed": False},
     "Changed the engine from Local (offline) to ElevenLabs"),
    ("budget.changed", "mia@example.com", {"from": None, "to": "1000"},
     "Changed the budget of mia@example.com from no limit to 1,000 credits"),
    ("plan.settings_changed", "free",
     {"budget_period": "month", "workspace_cap": None, "credit_limit": 10000},
     "Changed the plan settings"),
    ("rate.changed", "tts/*", {"unit": "character", "credits_per_unit": "0.5"},
     "Set the rate of Text to speech to 0.5 credits per character"),
    ("voices.require_approved", "on", {}, "Final renders now need approved voices"),
    ("something.new_thing", "x", {"flag": True, "items": ["tts"], "empty": None},
     "Something new thing: x"),
]  # fmt: skip


@pytest.fixture
def logged(workspace, owner):
    return [
        audit_record(workspace=workspace, actor=owner, action=a, target=t, data=d, ip="10.0.0.1")
        for a, t, d, _ in ENTRIES
    ]


def _table(body: str) -> str:
    return body.split("data-audit-table")[1].split("</table>")[0]


@pytest.mark.parametrize("htmx", [False, True], ids=["plain", "htmx"])
def test_every_entry_reads_as_a_sentence(client_as, owner, workspace, logged, htmx):
    response = client_as(owner, **(HTMX if htmx else {})).get(reverse("workspaces:audit"))
    assert response.status_code == 200
    table = _table(response.content.decode())
    for _, _, _, sentence in ENTRIES:
        assert sentence in table, sentence
    assert "All capabilities" in table and "No monthly cap" in table
    assert "25 credits a month" in table
    assert "Flag: yes" in table and "Items: Text to speech" in table
    assert "From the address 10.0.0.1" in table


def test_no_codes_reprs_or_raw_dates_reach_the_page(client_as, owner, workspace, logged):
    body = client_as(owner).get(reverse("workspaces:audit")).content.decode()
    table = _table(body)
    visible = re.sub(r"<[^>]+>", " ", table)
    for raw in ("None", "[]", "{", "True", "False", "role_changed", "api_key.", "<code"):
        assert raw not in visible and raw not in table, raw
    assert when_of(logged[0].created_at) in visible
    assert "later, keys" not in body


def test_the_search_box_has_a_label_and_help(client_as, owner, workspace):
    body = client_as(owner).get(reverse("workspaces:audit")).content.decode()
    assert '<label for="audit-q">' in body and 'aria-describedby="audit-q-help"' in body


def test_viewers_and_members_get_403_and_outsiders_see_only_their_own(
    client_as, member, viewer, outsider, workspace, logged
):
    for user in (member, viewer):
        assert client_as(user).get(reverse("workspaces:audit")).status_code == 403
    body = client_as(outsider).get(reverse("workspaces:audit")).content.decode()
    assert "mia@example.com" not in body
