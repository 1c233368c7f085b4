"""The API keys page in words people read: the one-time key panel, human values, the viewer's
sentence and the empty state's next step."""

import re
from decimal import Decimal

from django.urls import reverse

from apps.gateway import services
from tests.conftest import HTMX

PANEL = re.compile(r'<section[^>]*id="new-key-panel"[^>]*>', re.S)


def _create(client, **data):
    return client.post(reverse("gateway:keys"), {"name": "Podcast script", **data})


def test_the_new_key_panel_is_focusable_announced_and_says_it_is_shown_once(
    client_as, member, workspace
):
    for headers in ({}, HTMX):
        body = _create(client_as(member, **headers)).content.decode()
        panel = PANEL.search(body)
        assert panel, "the new key sits in its own panel"
        tag = panel.group(0)
        assert 'tabindex="-1"' in tag and "data-reveal" in tag
        assert 'role="status"' in tag and 'aria-live="polite"' in tag
        assert "it will not be shown again" in body
        assert 'data-copy="new-key"' in body and "Copy key" in body
        assert "js/team.js" in body or headers  # the full page loads the script that focuses it


def test_the_panel_comes_before_the_list_and_the_form(client_as, member, workspace):
    body = _create(client_as(member)).content.decode()
    assert body.index('id="new-key-panel"') < body.index("data-keys-table")
    assert body.index('id="new-key-panel"') < body.index('id="new-key-form"')


def test_key_rows_show_human_words_not_python_values(client_as, member, workspace):
    services.api_key_create(workspace=workspace, user=member, name="Everything")
    services.api_key_create(
        workspace=workspace,
        user=member,
        name="Capped",
        scopes=["tts", "music"],
        monthly_cap=Decimal("1"),
    )
    body = client_as(member).get(reverse("gateway:keys")).content.decode()
    table = body.split("data-keys-table")[1].split("</table>")[0]
    assert "All capabilities" in table
    assert "No cap" in table
    assert "1 credit<" in table  # singular, through |count
    assert "Text to speech" in table and "Music" in table
    for raw in ("None", "[]", "scopes:", "cap:", ">active<", ">tts<"):
        assert raw not in table, raw
    assert ">Active<" in table


def test_the_capability_checkboxes_show_no_codes(client_as, member, workspace):
    body = client_as(member).get(reverse("gateway:keys")).content.decode()
    form = body.split('id="new-key-form"')[1]
    assert "<code" not in form.split("</fieldset>")[0]


def test_a_viewer_is_told_what_to_do_instead(client_as, viewer, workspace):
    response = client_as(viewer).get(reverse("gateway:keys"))
    assert response.status_code == 403
    body = response.content.decode()
    assert "Viewers cannot use API keys" in body
    assert "make you a member" in body


def test_the_empty_state_offers_the_first_key(client_as, member, workspace):
    body = client_as(member).get(reverse("gateway:keys")).content.decode()
    assert "Create your first key" in body
    assert 'href="#id_name"' in body


def test_an_outsider_cannot_revoke_and_bad_ids_are_404(client_as, outsider, member, workspace):
    issued = services.api_key_create(workspace=workspace, user=member, name="Mine")
    client = client_as(outsider)
    assert client.post(reverse("gateway:revoke", args=[issued.api_key.pk])).status_code == 404
    assert client.post("/settings/api-keys/99999999/revoke/").status_code == 404
