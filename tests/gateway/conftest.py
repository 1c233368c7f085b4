"""The ElevenLabs network edge (``upstream``, ``on_elevenlabs``) for every gateway test."""

from tests.gateway.test_api_faults import on_elevenlabs, upstream  # noqa: F401 (fixtures)
