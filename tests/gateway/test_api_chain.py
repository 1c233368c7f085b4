"""Chorus behind Chorus: a workspace on the ElevenLabs engine whose base URL is a Chorus on the
local engine. The official SDK calls the first; its engine calls the second over real sockets."""

import pytest
from elevenlabs.client import ElevenLabs

from apps.billing.models import UsageEvent, UsageStatus
from apps.gateway import services
from apps.workspaces.services import engine_settings_update
from tests.factories import make_user, make_workspace

pytestmark = pytest.mark.slow

VOICE = "local-joe"


def test_a_chorus_on_the_elevenlabs_engine_can_use_a_chorus_on_the_local_engine(
    daphne_server, workspace, member
):
    upstream_key = services.api_key_create(workspace=workspace, user=member, name="Upstream")
    boss = make_user("boss@example.com", name="Bea Boss")
    front = make_workspace("Front office", owner=boss)
    engine_settings_update(
        workspace=front,
        actor=boss,
        kind="elevenlabs",
        api_key=upstream_key.raw,
        base_url=daphne_server.url,
    )
    front_key = services.api_key_create(workspace=front, user=boss, name="Script")
    sdk = ElevenLabs(base_url=daphne_server.url, api_key=front_key.raw)

    text = "Two hops, one voice."
    audio = b"".join(sdk.text_to_speech.convert(VOICE, text=text))
    streamed = b"".join(sdk.text_to_speech.stream(VOICE, text=text))
    assert len(audio) > 5000 and len(streamed) > 5000
    assert VOICE in {v.voice_id for v in sdk.voices.search(page_size=100).voices}

    front_events = UsageEvent.objects.filter(workspace=front).order_by("id")
    back_events = UsageEvent.objects.filter(workspace=workspace).order_by("id")
    assert [(e.engine, e.status, e.units) for e in front_events] == [
        ("elevenlabs", UsageStatus.SETTLED, len(text))
    ] * 2
    assert [(e.engine, e.status) for e in back_events] == [("local", UsageStatus.SETTLED)] * 2
    # Each front call records the upstream Chorus's ledger id as its provider request id.
    assert [e.upstream_request_id for e in front_events] == [e.request_id for e in back_events]
