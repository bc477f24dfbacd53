"""Speech to text with an OpenAI-compatible `/audio/transcriptions` API (Whisper and the like)."""

from __future__ import annotations

import asyncio
from typing import Final

import openai

from .errors import SpeechAuthError, SpeechServiceError

DEFAULT_BASE_URL: Final = "https://api.openai.com/v1"
DEFAULT_MODEL: Final = "whisper-1"
UPLOAD_NAME: Final = "speech.wav"


class OpenAiTranscriber:
    """Send one WAV file, get its text."""

    def __init__(self, client: openai.AsyncOpenAI, *, model: str, timeout: float) -> None:
        """Use a client built by the caller (with the host's HTTP client)."""
        self._client = client.with_options(timeout=timeout, max_retries=0)
        self._model = model
        self._timeout = timeout

    async def transcribe(self, wav: bytes, *, language: str | None = None) -> str:
        """The text of a WAV recording; `language` is ISO 639-1 ("zh"), or None to detect."""
        try:
            async with asyncio.timeout(self._timeout):
                result = await self._client.audio.transcriptions.create(
                    model=self._model,
                    file=(UPLOAD_NAME, wav, "audio/wav"),
                    language=language or openai.omit,
                    response_format="json",
                )
        except openai.AuthenticationError as err:
            raise SpeechAuthError(f"The service refused the API key: {err}") from err
        except TimeoutError as err:
            raise SpeechServiceError(f"No transcript within {self._timeout:g} s") from err
        except openai.OpenAIError as err:
            raise SpeechServiceError(f"Transcription failed: {err}") from err
        return result.text.strip()
