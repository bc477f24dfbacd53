"""Clients for cloud speech services: Edge TTS, DashScope (Paraformer, CosyVoice), OpenAI STT.

Nothing here imports Home Assistant: HTTP sessions and clients are passed in, and every failure is
raised as a `SpeechServiceError`, which the STT and TTS platforms turn into HA's own errors.
"""

from .errors import SpeechAuthError, SpeechServiceError

__all__ = ["SpeechAuthError", "SpeechServiceError"]
