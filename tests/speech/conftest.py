"""Fixtures the speech tests share with the gateway's: the ElevenLabs network edge."""

from tests.gateway.test_api_faults import on_elevenlabs, upstream  # noqa: F401 (fixtures)
