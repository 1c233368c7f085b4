"""What speech remembers per process (issue 13): a voice's rows (``voice_facts``), whether the
library has a row for a voice (``generation_counted``) and the workspace's engine. Each is
forgotten as soon as what it comes from changes in this process, and a consent's expiry is
compared with the time on every call."""

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.engines.base import TTSRequest
from apps.engines.local.engine import local_engine
from apps.generation import engine as engine_resolution
from apps.generation.errors import ApiRefused
from apps.history.models import Generation, GenerationKind
from apps.voices import services, services_made, services_usage
from apps.voices.models import ApiVoice, LibraryVoice, VoiceConsent, VoiceSettingsRecord
from apps.voices.services_usage import require_approved_set
from apps.workspaces import crypto
from apps.workspaces import services as workspace_services

VOICE = "v-cached-voice"


@pytest.fixture(autouse=True)
def forgotten():
    services_made.voice_facts_forget()
    services_usage.library_has_forget()
    yield
    services_made.voice_facts_forget()
    services_usage.library_has_forget()


def applied(workspace, *, final=False, voice_id=VOICE) -> TTSRequest:
    request = TTSRequest(text="Hello", voice_id=voice_id)
    services_made.speech_voice_apply(
        workspace=workspace, engine=local_engine(), request=request, given=None, final=final
    )
    return request


def test_stored_settings_are_remembered_and_forgotten_when_saved_or_deleted(
    workspace, django_assert_num_queries
):
    assert applied(workspace).voice_settings is None
    with django_assert_num_queries(0):  # remembered: no query
        assert applied(workspace).voice_settings is None
    record = VoiceSettingsRecord.objects.create(workspace=workspace, voice_id=VOICE, speed=1.2)
    assert applied(workspace).voice_settings.speed == 1.2
    record.speed = 0.8
    record.save()
    assert applied(workspace).voice_settings.speed == 0.8
    record.delete()
    assert applied(workspace).voice_settings is None


def test_a_made_voice_is_forgotten_when_saved(workspace, owner):
    assert applied(workspace).voice_recipe is None
    row = ApiVoice.objects.create(
        workspace=workspace, voice_id=VOICE, engine="local", name="Made", category="generated",
        recipe={"pitch": 1.0}, created_by=owner,
    )  # fmt: skip
    assert applied(workspace).voice_recipe == {"pitch": 1.0}
    row.recipe = {"pitch": 2.0}
    row.save()
    assert applied(workspace).voice_recipe == {"pitch": 2.0}


def _clone_with_consent(workspace, owner, *, expires_at):
    ApiVoice.objects.create(
        workspace=workspace, voice_id=VOICE, engine="local", name="Nadia", category="cloned",
        recipe={"pitch": 1.0}, created_by=owner,
    )  # fmt: skip
    return VoiceConsent.objects.create(
        workspace=workspace, uid="consent-cached", engine="local", voice_id=VOICE,
        speaker_name="Nadia Haddad", statement="I agree.", expires_at=expires_at,
    )  # fmt: skip


def test_a_consent_saved_in_this_process_takes_effect_at_once(workspace, owner):
    consent = _clone_with_consent(workspace, owner, expires_at=timezone.now() + timedelta(days=1))
    applied(workspace)
    consent.expires_at = timezone.now() - timedelta(minutes=1)
    consent.save()
    with pytest.raises(ApiRefused) as refused:
        applied(workspace)
    assert refused.value.code == "voice_consent_expired"
    assert "Nadia Haddad" in refused.value.message
    consent.expires_at = timezone.now() + timedelta(days=30)
    consent.save()
    applied(workspace)


def test_a_remembered_consent_is_compared_with_the_time_on_every_call(
    workspace, owner, monkeypatch
):
    soon = timezone.now() + timedelta(minutes=5)
    _clone_with_consent(workspace, owner, expires_at=soon)
    applied(workspace)
    later = soon + timedelta(seconds=1)
    monkeypatch.setattr(services_made.timezone, "now", lambda: later)
    with pytest.raises(ApiRefused) as refused:
        applied(workspace)
    assert refused.value.code == "voice_consent_expired"


def test_approved_voices_only_takes_effect_at_once_and_approval_is_read_every_call(
    workspace, owner
):
    services.library_sync(workspace=workspace)
    voice = LibraryVoice.objects.filter(workspace=workspace).order_by("pk").first()
    applied(workspace, final=True, voice_id=voice.voice_id)
    require_approved_set(workspace=workspace, actor=owner, enabled=True)
    with pytest.raises(ApiRefused) as refused:
        applied(workspace, final=True, voice_id=voice.voice_id)
    assert refused.value.code == "voice_not_approved"
    LibraryVoice.objects.filter(pk=voice.pk).update(approval="approved")  # no signal
    applied(workspace, final=True, voice_id=voice.voice_id)


def test_the_cache_lifetime_zero_reads_every_call(workspace, settings):
    settings.CHORUS_API_KEY_CACHE_SECONDS = 0
    applied(workspace)
    VoiceSettingsRecord.objects.filter(workspace=workspace).delete()
    VoiceSettingsRecord.objects.bulk_create(
        [VoiceSettingsRecord(workspace=workspace, voice_id=VOICE, speed=1.1)]
    )  # no signal
    assert applied(workspace).voice_settings.speed == 1.1


# --- Use counts ---------------------------------------------------------------------------


def clip(workspace, voice_id):
    return Generation.objects.create(
        workspace=workspace, kind=GenerationKind.TTS, engine="local", voice_id=voice_id,
        content_type="audio/mpeg", file="generations/x.mp3",
    )  # fmt: skip


def test_a_voice_without_a_library_row_costs_no_query_then_counts_once_added(
    workspace, django_assert_num_queries
):
    clip(workspace, VOICE)
    with django_assert_num_queries(1):  # the INSERT only: no UPDATE of the library
        clip(workspace, VOICE)
    voice = LibraryVoice.objects.create(
        workspace=workspace, engine="local", voice_id=VOICE, name="Added"
    )
    clip(workspace, VOICE)
    voice.refresh_from_db()
    assert voice.use_count == 1


def test_a_library_sync_in_this_process_counts_the_next_clip(workspace):
    services.library_sync(workspace=workspace)
    voice = LibraryVoice.objects.filter(workspace=workspace).order_by("pk").first()
    voice_id = voice.voice_id
    LibraryVoice.objects.filter(pk=voice.pk).delete()
    clip(workspace, voice_id)  # remembered: no row
    services.library_sync(workspace=workspace)  # adds it back in bulk, then saves the facets
    clip(workspace, voice_id)
    assert LibraryVoice.objects.get(workspace=workspace, voice_id=voice_id).use_count == 1


# --- The engine ---------------------------------------------------------------------------


def test_the_engine_is_kept_without_decrypting_and_rebuilt_when_its_key_changes(
    workspace, owner, monkeypatch
):
    engine_resolution._engine_cache.clear()
    workspace_services.engine_settings_update(
        workspace=workspace, actor=owner, kind="elevenlabs", api_key="sk_first_0123456789"
    )
    first = engine_resolution.engine_for(workspace)
    decrypted = []
    real = crypto.decrypt
    monkeypatch.setattr(crypto, "decrypt", lambda token: decrypted.append(token) or real(token))
    assert engine_resolution.engine_for(workspace) is first
    assert decrypted == []
    workspace_services.engine_settings_update(
        workspace=workspace, actor=owner, kind="elevenlabs", api_key="sk_second_0123456789"
    )
    second = engine_resolution.engine_for(workspace)
    assert second is not first and len(decrypted) == 1
    engine_resolution._engine_cache.clear()
