"""The ElevenLabs engine: the real API over httpx and websockets."""
