"""Settings, engine, create and invitation pages: current copy, human values, labelled inputs
with help, and an empty state that says what to do."""

import re

from django.urls import reverse

from apps.jobs.models import Job, JobStatus
from studio_site.format import when_of
from tests.conftest import HTMX


def _visible(body: str) -> str:
    main = body.split('<main id="main"', 1)[-1]
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", main))


def test_settings_lists_exports_by_date_not_number(client_as, owner, workspace):
    job = Job.objects.create(
        workspace=workspace, kind="workspace_export", created_by=owner, status=JobStatus.SUCCEEDED
    )
    body = client_as(owner).get(reverse("workspaces:settings")).content.decode()
    text = _visible(body)
    assert f"Export of {when_of(job.created_at)}" in text
    assert f"Export #{job.pk}" not in text
    assert " ago" not in text
    assert "No exports yet" not in text


def test_settings_without_exports_says_how_to_make_one(client_as, owner, workspace):
    text = _visible(client_as(owner).get(reverse("workspaces:settings")).content.decode())
    assert "No exports yet" in text
    for stale in ("later", "None"):
        assert stale not in text, stale


def test_the_workspace_name_input_has_a_label_and_help(client_as, owner, workspace, settings):
    settings.CHORUS_WORKSPACE_CREATION = "anyone"
    for url in (reverse("workspaces:settings"), reverse("workspaces:create")):
        body = client_as(owner).get(url).content.decode()
        assert '<label for="id_name">Workspace name</label>' in body, url
        assert "Everyone in the workspace sees it" in body, url


def test_the_engine_check_shows_words_not_codes(client_as, owner, workspace):
    response = client_as(owner, **HTMX).post(reverse("workspaces:engine_test"))
    assert response.status_code == 200
    body = response.content.decode()
    assert 'data-check="ok"' in body
    text = _visible(body)
    assert "Engine: Local (offline)." in text
    for raw in ("Engine: local", "None", "—"):
        assert raw not in text, raw


def test_the_engine_page_explains_each_input(client_as, owner, workspace):
    body = client_as(owner).get(reverse("workspaces:engine")).content.decode()
    assert '<label for="id_api_key">ElevenLabs API key</label>' in body
    assert '<label for="id_base_url">API base URL</label>' in body
    assert "Stored encrypted" in body and "Leave empty for the default" in body
