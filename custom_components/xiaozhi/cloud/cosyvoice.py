"""CosyVoice speech synthesis (DashScope): text goes up as it is written, audio comes back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Final

from .dashscope import DashScopeModel, DashScopeTask, Payload
from .errors import SpeechServiceError

DEFAULT_MODEL: Final = "cosyvoice-v2"
DEFAULT_VOICE: Final = "longxiaochun_v2"
# Raw 16-bit mono PCM at 24 kHz: the model's own rate, and the xiaozhi downlink rate.
AUDIO_FORMAT: Final = "pcm"
SAMPLE_RATE: Final = 24000
MAX_TEXT_PER_MESSAGE: Final = 2000  # characters per continue-task (a Chinese one counts twice)
DEFAULT_VOLUME: Final = 50  # the service's scale is 0..100
MIN_SPEECH_RATE: Final = 0.5
MAX_SPEECH_RATE: Final = 2.0


@dataclass(frozen=True, slots=True)
class CosyVoice:
    """A system voice: its id, a label and the languages it speaks."""

    voice_id: str
    name: str
    languages: tuple[str, ...]


# A handful of the cosyvoice-v2 system voices (the service has many more; any id may be set).
VOICES: Final = (
    CosyVoice("longxiaochun_v2", "龙小淳 Longxiaochun", ("zh", "en")),
    CosyVoice("longxiaoxia_v2", "龙小夏 Longxiaoxia", ("zh", "en")),
    CosyVoice("longwan_v2", "龙婉 Longwan", ("zh",)),
    CosyVoice("longcheng_v2", "龙橙 Longcheng", ("zh",)),
    CosyVoice("longhua_v2", "龙华 Longhua", ("zh",)),
    CosyVoice("longshu_v2", "龙书 Longshu", ("zh",)),
    CosyVoice("loongbella_v2", "Bella", ("zh",)),
    CosyVoice("loongeva_v2", "Eva", ("en",)),
    CosyVoice("loongbrian_v2", "Brian", ("en",)),
    CosyVoice("loongluna_v2", "Luna", ("en",)),
)


def voices_for(language: str) -> list[CosyVoice]:
    """The known voices that speak a language ("zh-CN" or "zh")."""
    code = language.split("-")[0].lower()
    return [voice for voice in VOICES if code in voice.languages]


def speech_rate(percent: float) -> float:
    """The service's rate factor for a change in percent (+50 -> 1.5), within its range."""
    return min(MAX_SPEECH_RATE, max(MIN_SPEECH_RATE, 1 + percent / 100))


def volume(percent: float) -> int:
    """The service's 0..100 volume for a change in percent around its default of 50."""
    return round(min(100.0, max(0.0, DEFAULT_VOLUME * (1 + percent / 100))))


def _parameters(voice: str, *, rate: float = 1.0, volume: int = DEFAULT_VOLUME) -> Payload:
    return {
        "text_type": "PlainText",
        "voice": voice,
        "format": AUDIO_FORMAT,
        "sample_rate": SAMPLE_RATE,
        "volume": volume,
        "rate": rate,
        "pitch": 1.0,
    }


def _pieces(text: str) -> list[str]:
    return [text[i : i + MAX_TEXT_PER_MESSAGE] for i in range(0, len(text), MAX_TEXT_PER_MESSAGE)]


class CosyVoiceClient(DashScopeModel):
    """Synthesise streamed text into streamed 24 kHz PCM with CosyVoice."""

    default_model = DEFAULT_MODEL

    async def check(self, *, voice: str = DEFAULT_VOICE) -> None:
        """Start a synthesis task with the voice and close it: raises what a real request would."""
        await self._check_task("tts", "SpeechSynthesizer", _parameters(voice))

    async def synthesize(
        self,
        text: AsyncIterable[str],
        *,
        voice: str = DEFAULT_VOICE,
        rate: float = 1.0,
        volume: int = DEFAULT_VOLUME,
    ) -> AsyncIterator[bytes]:
        """Start a task (connection errors raise here); return its PCM as it is made."""
        task = await self._start_task(
            "tts", "SpeechSynthesizer", _parameters(voice, rate=rate, volume=volume)
        )
        return self._audio(task, text)

    async def _audio(self, task: DashScopeTask, text: AsyncIterable[str]) -> AsyncIterator[bytes]:
        text_failure: list[Exception] = []
        writer = asyncio.create_task(self._write(task, text, text_failure))
        try:
            async for result in task.results():
                if isinstance(result, bytes):
                    yield result
            await writer  # the service finished: the writer has sent finish-task
        except SpeechServiceError:
            if text_failure:  # the text stream failed first and closed the task: that is the cause
                raise text_failure[0] from None
            raise
        finally:
            if not writer.done():
                writer.cancel()
            elif not writer.cancelled():
                writer.exception()  # retrieved: raised above when it mattered
            await task.close()

    @staticmethod
    async def _write(
        task: DashScopeTask, text: AsyncIterable[str], failure: list[Exception]
    ) -> None:
        """Send each piece of text as it arrives, then finish-task."""
        try:
            async for piece in text:
                for part in _pieces(piece):
                    await task.send_text(part)
            await task.finish()
        except Exception as err:
            failure.append(err)
            await task.close()  # wakes the reader, which raises
            raise
