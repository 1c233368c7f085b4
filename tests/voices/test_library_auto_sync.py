"""The library fills itself: a new workspace and a change of engine sync it once committed (the
local engine at once, ElevenLabs in a job); a stale library tells managers, not members."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from apps.jobs.models import Job
from apps.voices import services_sync
from apps.voices.models import LibrarySync, LibraryVoice
from apps.voices.services import library_sync
from apps.workspaces.services import engine_settings_update, workspace_create
from tests.conftest import HTMX
from tests.factories import make_user


def to_elevenlabs(workspace, owner, key="sk-one"):
    engine_settings_update(
        workspace=workspace,
        actor=owner,
        kind="elevenlabs",
        api_key=key,
        base_url="https://api.elevenlabs.test",
    )


def sync_jobs(workspace):
    return Job.objects.filter(workspace=workspace, kind="voices_sync")


def test_a_new_workspace_lists_the_engine_s_voices_without_pressing_sync(
    db, django_capture_on_commit_callbacks
):
    founder = make_user("founder@example.com")
    with django_capture_on_commit_callbacks(execute=True):
        workspace = workspace_create(name="Fresh studio", owner=founder)
    voices = LibraryVoice.objects.filter(workspace=workspace)
    assert voices.count() >= 10 and set(voices.values_list("engine", flat=True)) == {"local"}
    state = LibrarySync.objects.get(workspace=workspace)
    assert state.engine == "local" and state.synced_at is not None
    assert not sync_jobs(workspace).exists()  # no network: no job needed


def test_nothing_is_synced_before_the_workspace_is_committed(
    db, django_capture_on_commit_callbacks
):
    founder = make_user("founder@example.com")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        workspace = workspace_create(name="Fresh studio", owner=founder)
    assert callbacks and not LibraryVoice.objects.filter(workspace=workspace).exists()


def test_a_change_to_elevenlabs_syncs_in_one_job_and_the_same_settings_start_none(
    workspace, owner, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        to_elevenlabs(workspace, owner)
    [job] = sync_jobs(workspace)  # two saves of the row in that change: one job
    assert job.created_by is None
    with django_capture_on_commit_callbacks(execute=True):
        engine_settings_update(
            workspace=workspace, actor=owner, kind="elevenlabs", api_key=None,
            base_url="https://api.elevenlabs.test",
        )  # fmt: skip
    assert sync_jobs(workspace).count() == 1  # nothing a sync reads changed
    with django_capture_on_commit_callbacks(execute=True):
        to_elevenlabs(workspace, owner, key="sk-two")  # another key: another account
    assert sync_jobs(workspace).count() == 2


def test_back_to_the_local_engine_syncs_at_once(
    workspace, owner, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        to_elevenlabs(workspace, owner)
    assert not LibraryVoice.objects.filter(workspace=workspace).exists()
    with django_capture_on_commit_callbacks(execute=True):
        engine_settings_update(
            workspace=workspace, actor=owner, kind="local", api_key=None, remove_key=True
        )
    assert LibraryVoice.objects.filter(workspace=workspace, engine="local").count() >= 10
    assert sync_jobs(workspace).count() == 1  # only the ElevenLabs one


def test_a_sync_that_fails_never_fails_the_change_and_leaves_the_banner(
    workspace, owner, manager, client_as, monkeypatch, django_capture_on_commit_callbacks
):
    def broken(**_kwargs):
        raise RuntimeError("engine down")

    monkeypatch.setattr("apps.voices.services.library_sync", broken)
    with django_capture_on_commit_callbacks(execute=True):
        to_elevenlabs(workspace, owner)
        engine_settings_update(
            workspace=workspace, actor=owner, kind="local", api_key=None, remove_key=True
        )
    page = client_as(manager).get(reverse("voices:library")).content.decode()
    assert 'id="library-stale"' in page


# --- The stale banner ------------------------------------------------------------------------


def banner(client, **headers):
    response = client.get(reverse("voices:library"), **headers)
    assert response.status_code == 200
    return 'id="library-stale"' in response.content.decode(), response.content.decode()


@pytest.mark.parametrize("role", ["owner", "manager"])
def test_managers_are_told_a_library_never_synced_is_stale(workspace, client_as, request, role):
    shown, page = banner(client_as(request.getfixturevalue(role)))
    assert shown and "never been synced" in page
    assert f'action="{reverse("voices:sync")}"' in page


@pytest.mark.parametrize("role", ["member", "viewer"])
def test_members_and_viewers_see_no_banner(workspace, client_as, request, role):
    assert not banner(client_as(request.getfixturevalue(role)))[0]


def test_a_synced_library_shows_no_banner_until_the_engine_changes(
    workspace, owner, manager, client_as
):
    library_sync(workspace=workspace)
    assert not banner(client_as(manager))[0]
    to_elevenlabs(workspace, owner)  # (no commit here: no sync ran)
    shown, page = banner(client_as(manager))
    assert shown and "engine settings changed" in page


def test_a_library_synced_long_ago_is_stale(workspace, manager, client_as, settings):
    library_sync(workspace=workspace)
    LibrarySync.objects.filter(workspace=workspace).update(
        synced_at=timezone.now() - timedelta(days=8)
    )
    shown, page = banner(client_as(manager))
    assert shown and "more than 7 days ago" in page
    settings.CHORUS_VOICES_STALE_DAYS = 30
    assert not banner(client_as(manager))[0]


def test_htmx_results_carry_no_banner(workspace, manager, client_as):
    shown, page = banner(client_as(manager), **HTMX)
    assert not shown and "<html" not in page


def test_auto_sync_can_be_turned_off(db, settings, django_capture_on_commit_callbacks):
    settings.CHORUS_VOICES_AUTO_SYNC = False
    with django_capture_on_commit_callbacks(execute=True):
        workspace = workspace_create(name="Quiet", owner=make_user("q@example.com"))
    assert not LibraryVoice.objects.filter(workspace=workspace).exists()
    assert services_sync.library_staleness(workspace).stale
