"""Checked /v1 keys are remembered for a few seconds per process, and forgotten on any change.

A busy script's calls then cost no query to know their key; a change made in this process
(revocation, removed member, new engine settings) applies to the next call, one made in
another process within ``CHORUS_API_KEY_CACHE_SECONDS``.
"""

from datetime import timedelta

import pytest
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.gateway import services
from apps.gateway.models import ApiKey
from apps.gateway.services import KeyRejected, api_key_authenticate
from apps.workspaces.models import Membership, Role
from apps.workspaces.services import engine_settings_update


@pytest.fixture(autouse=True)
def fresh_cache():
    services.known_keys_forget()
    yield
    services.known_keys_forget()


@pytest.fixture
def issued(workspace, member):
    return services.api_key_create(workspace=workspace, user=member, name="Busy script")


def queries_of(raw) -> tuple[ApiKey, int]:
    with CaptureQueriesContext(connection) as queries:
        api_key = api_key_authenticate(raw)
    return api_key, len(queries)


def test_a_checked_key_costs_no_query_on_the_next_calls(issued):
    first, looked_up = queries_of(issued.raw)
    assert looked_up >= 2  # the key, the membership (and the first last_used_at)
    again, none = queries_of(issued.raw)
    assert none == 0
    assert again.pk == first.pk and again.membership.role == Role.MEMBER


@override_settings(CHORUS_API_KEY_CACHE_SECONDS=0)
def test_zero_seconds_looks_the_key_up_every_time(issued):
    queries_of(issued.raw)
    _, looked_up = queries_of(issued.raw)
    assert looked_up == 2


def test_a_revocation_in_this_process_applies_to_the_next_call(issued, member):
    queries_of(issued.raw)
    services.api_key_revoke(api_key=ApiKey.objects.get(pk=issued.api_key.pk), actor=member)
    with pytest.raises(KeyRejected, match="revoked"):
        api_key_authenticate(issued.raw)


def test_a_member_made_viewer_is_refused_at_once(issued, workspace, member):
    queries_of(issued.raw)
    row = Membership.objects.get(workspace=workspace, user=member)
    row.role = Role.VIEWER
    row.save()
    with pytest.raises(KeyRejected, match="no longer a member"):
        api_key_authenticate(issued.raw)


def test_new_engine_settings_are_seen_at_once(issued, workspace, owner):
    assert queries_of(issued.raw)[0].engine_row is None  # the local engine
    engine_settings_update(
        workspace=workspace, actor=owner, kind="elevenlabs", api_key="sk-new",
        base_url="http://127.0.0.1:9",
    )  # fmt: skip
    assert api_key_authenticate(issued.raw).engine_row.kind == "elevenlabs"


def test_a_change_no_signal_announces_applies_once_the_time_is_up(issued, monkeypatch):
    """What another process changed: seen when this process's memory of the key runs out."""
    queries_of(issued.raw)
    ApiKey.objects.filter(pk=issued.api_key.pk).update(revoked_at=timezone.now())  # no signal
    assert api_key_authenticate(issued.raw).pk == issued.api_key.pk  # still remembered
    later = services.time.monotonic() + 6
    monkeypatch.setattr(services.time, "monotonic", lambda: later)
    with pytest.raises(KeyRejected, match="revoked"):
        api_key_authenticate(issued.raw)


def test_expiry_is_checked_on_every_call_even_when_remembered(workspace, member, monkeypatch):
    soon = timezone.now() + timedelta(minutes=5)
    issued = services.api_key_create(
        workspace=workspace, user=member, name="Short", expires_at=soon
    )
    queries_of(issued.raw)
    monkeypatch.setattr(services.timezone, "now", lambda: soon + timedelta(seconds=1))
    with pytest.raises(KeyRejected, match="expired"):
        api_key_authenticate(issued.raw)


def test_unknown_keys_are_never_remembered(issued):
    for _ in range(2):
        with CaptureQueriesContext(connection) as queries, pytest.raises(KeyRejected):
            api_key_authenticate("chorus_not-a-key")
        assert len(queries) == 1
