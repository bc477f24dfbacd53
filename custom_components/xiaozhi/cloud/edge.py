"""Microsoft Edge read-aloud voices through edge-tts: no key; MP3, one request per sentence."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
import logging
import math
import re
import time
from typing import Final

import aiohttp
import edge_tts
from edge_tts.exceptions import EdgeTTSException

from ..core.sentences import SentenceSplitter
from .errors import SpeechServiceError

_LOGGER = logging.getLogger(__name__)

# edge-tts always asks the service for audio-24khz-48kbitrate-mono-mp3.
EXTENSION: Final = "mp3"
DEFAULT_LANGUAGE: Final = "zh-CN"
DEFAULT_VOICES: Final = {
    "zh-CN": "zh-CN-XiaoxiaoNeural",
    "zh-HK": "zh-HK-HiuMaanNeural",
    "zh-TW": "zh-TW-HsiaoChenNeural",
    "en-US": "en-US-EmmaMultilingualNeural",
    "en-GB": "en-GB-SoniaNeural",
}
DEFAULT_VOICE: Final = DEFAULT_VOICES[DEFAULT_LANGUAGE]
VOICE_LIST_TTL_S: Final = 24 * 3600.0
VOICE_LIST_RETRY_S: Final = 600.0  # after a failed fetch, use the fallback this long
MIN_RATE_PERCENT: Final = -50
MAX_RATE_PERCENT: Final = 100
MIN_PITCH_HZ: Final = -50
MAX_PITCH_HZ: Final = 50
MIN_VOLUME_PERCENT: Final = -50
MAX_VOLUME_PERCENT: Final = 100
_PERCENT: Final = re.compile(r"^[+-]?\d+%?$")
_HERTZ: Final = re.compile(r"^[+-]?\d+(Hz)?$")
_SHORT_NAME: Final = re.compile(r"^[a-z]{2,}-[A-Za-z]{2,}(?:-[A-Za-z]+)?-(.+?)(?:Neural)?$")


@dataclass(frozen=True, slots=True)
class EdgeVoice:
    """One voice: its id (ShortName), locale and gender."""

    voice_id: str
    locale: str
    gender: str

    @property
    def name(self) -> str:
        """A readable label, "Xiaoxiao (Female)"."""
        match = _SHORT_NAME.match(self.voice_id)
        label = match.group(1) if match else self.voice_id
        return f"{label} ({self.gender})" if self.gender else label


# Used until (or when) the service's list cannot be fetched, and offered when adding a voice.
FALLBACK_VOICES: Final = (
    EdgeVoice("zh-CN-XiaoxiaoNeural", "zh-CN", "Female"),
    EdgeVoice("zh-CN-XiaoyiNeural", "zh-CN", "Female"),
    EdgeVoice("zh-CN-YunxiNeural", "zh-CN", "Male"),
    EdgeVoice("zh-CN-YunjianNeural", "zh-CN", "Male"),
    EdgeVoice("zh-CN-YunyangNeural", "zh-CN", "Male"),
    EdgeVoice("zh-CN-liaoning-XiaobeiNeural", "zh-CN-liaoning", "Female"),
    EdgeVoice("zh-CN-shaanxi-XiaoniNeural", "zh-CN-shaanxi", "Female"),
    EdgeVoice("en-US-EmmaMultilingualNeural", "en-US", "Female"),
    EdgeVoice("en-US-AvaNeural", "en-US", "Female"),
    EdgeVoice("en-US-JennyNeural", "en-US", "Female"),
    EdgeVoice("en-US-AriaNeural", "en-US", "Female"),
    EdgeVoice("en-US-EmmaNeural", "en-US", "Female"),
    EdgeVoice("en-US-AndrewNeural", "en-US", "Male"),
    EdgeVoice("en-US-GuyNeural", "en-US", "Male"),
)


def _signed(
    value: int | float | str, unit: str, pattern: re.Pattern[str], low: int, high: int
) -> str:
    text = str(value).strip()
    if not pattern.match(text):
        raise ValueError(f"{value!r} is not a number of {unit}")
    number = int(text.removesuffix(unit))
    if not low <= number <= high:
        raise ValueError(f"{number}{unit} is outside {low}..{high}")
    return f"{number:+d}{unit}"


def format_rate(value: int | float | str) -> str:
    """Edge's speaking rate ("+10%") from a change in percent (10 or "+10%")."""
    if isinstance(value, float):
        value = math.floor(value)
    return _signed(value, "%", _PERCENT, MIN_RATE_PERCENT, MAX_RATE_PERCENT)


def format_volume(value: int | float | str) -> str:
    """Edge's volume ("-20%") from a change in percent."""
    if isinstance(value, float):
        value = math.floor(value)
    return _signed(value, "%", _PERCENT, MIN_VOLUME_PERCENT, MAX_VOLUME_PERCENT)


def format_pitch(value: int | float | str) -> str:
    """Edge's pitch ("+5Hz") from a change in hertz."""
    if isinstance(value, float):
        value = math.floor(value)
    return _signed(value, "Hz", _HERTZ, MIN_PITCH_HZ, MAX_PITCH_HZ)


def default_voice(language: str, voices: list[EdgeVoice]) -> str | None:
    """The voice to use for a language when none was chosen."""
    if (voice := DEFAULT_VOICES.get(language)) is not None:
        return voice
    return next((v.voice_id for v in voices if v.locale == language), None)


class EdgeTtsClient:
    """Edge read-aloud: the voice list (cached) and synthesis, every request time-limited.

    edge-tts opens its own aiohttp session per request (it closes the connector it is given, so
    a shared session cannot be lent to it).
    """

    def __init__(self, *, timeout: float) -> None:
        """Start with the fallback voices; `async_voices` fetches the real list."""
        self._timeout = timeout
        self._voices: list[EdgeVoice] = list(FALLBACK_VOICES)
        self._voices_expire = 0.0
        self._voices_lock = asyncio.Lock()

    @property
    def voices(self) -> list[EdgeVoice]:
        """The voices last known (the fallback until fetched)."""
        return self._voices

    async def async_voices(self) -> list[EdgeVoice]:
        """The service's voices, fetched at most once a day; the fallback when unreachable."""
        async with self._voices_lock:
            if time.monotonic() < self._voices_expire:
                return self._voices
            try:
                listed = await self.async_fetch_voices()
            except SpeechServiceError as err:
                _LOGGER.warning("Cannot fetch the Edge TTS voice list, using a short one: %s", err)
                self._voices = list(FALLBACK_VOICES)
                self._voices_expire = time.monotonic() + VOICE_LIST_RETRY_S
                return self._voices
            self._voices = listed or list(FALLBACK_VOICES)
            self._voices_expire = time.monotonic() + VOICE_LIST_TTL_S
            return self._voices

    async def async_fetch_voices(self) -> list[EdgeVoice]:
        """The service's voices now (not cached); SpeechServiceError if they cannot be fetched."""
        try:
            async with asyncio.timeout(self._timeout):
                listed = await edge_tts.list_voices()
        except TimeoutError as err:
            raise SpeechServiceError(f"No Edge TTS voice list within {self._timeout:g} s") from err
        except (aiohttp.ClientError, OSError, ValueError) as err:
            raise SpeechServiceError(f"Cannot fetch the Edge TTS voice list: {err}") from err
        return [
            EdgeVoice(voice["ShortName"], voice["Locale"], voice.get("Gender", ""))
            for voice in listed
            if voice.get("ShortName") and voice.get("Locale")
        ]

    async def stream(
        self,
        text: AsyncIterable[str],
        *,
        voice: str,
        rate: str = "+0%",
        pitch: str = "+0Hz",
        volume: str = "+0%",
    ) -> AsyncIterator[bytes]:
        """Speak each sentence as soon as it is complete: first audio before the text ends."""
        splitter = SentenceSplitter()
        async for piece in text:
            for sentence in splitter.push(piece):
                async for audio in self.synthesize(
                    sentence, voice=voice, rate=rate, pitch=pitch, volume=volume
                ):
                    yield audio
        if (rest := splitter.flush()) is not None:
            async for audio in self.synthesize(
                rest, voice=voice, rate=rate, pitch=pitch, volume=volume
            ):
                yield audio

    async def synthesize(
        self,
        text: str,
        *,
        voice: str,
        rate: str = "+0%",
        pitch: str = "+0Hz",
        volume: str = "+0%",
    ) -> AsyncIterator[bytes]:
        """Speak one text; MP3 chunks as the service sends them."""
        seconds = max(1, math.ceil(self._timeout))
        try:
            communicate = edge_tts.Communicate(
                text,
                voice,
                rate=rate,
                pitch=pitch,
                volume=volume,
                connect_timeout=seconds,
                receive_timeout=seconds,
            )
        except ValueError as err:
            raise SpeechServiceError(f"Edge TTS cannot use these settings: {err}") from err
        chunks = communicate.stream()
        try:
            while True:
                try:
                    async with asyncio.timeout(self._timeout):
                        chunk = await anext(chunks)
                except StopAsyncIteration:
                    return
                if chunk["type"] == "audio" and (data := chunk.get("data")):
                    yield data
        except TimeoutError as err:
            raise SpeechServiceError(f"Edge TTS did not answer within {self._timeout:g} s") from err
        except (EdgeTTSException, aiohttp.ClientError, OSError) as err:
            raise SpeechServiceError(f"Edge TTS failed: {err}") from err
        finally:
            await chunks.aclose()
