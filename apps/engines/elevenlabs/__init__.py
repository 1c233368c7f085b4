"""The ElevenLabs engine: the real API over httpx and websockets."""

from .aio import AsyncElevenLabsClient, AsyncTTSStream
from .client import ElevenLabsEngine

__all__ = ["AsyncElevenLabsClient", "AsyncTTSStream", "ElevenLabsEngine"]
