"""Paraformer realtime speech recognition (DashScope): audio goes up while the user speaks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Callable
from typing import Any, Final

from .dashscope import DashScopeModel, DashScopeTask, Payload

DEFAULT_MODEL: Final = "paraformer-realtime-v2"
SAMPLE_RATE: Final = 16000
AUDIO_FORMAT: Final = "pcm"
# The service asks for frames of about 100 ms; smaller chunks are joined up to this size.
AUDIO_FRAME_BYTES: Final = SAMPLE_RATE * 2 // 10
# Language hints the model takes, by the first subtag of an HA language (Cantonese by region).
LANGUAGE_HINTS: Final = {"zh": "zh", "en": "en", "ja": "ja", "ko": "ko", "de": "de", "fr": "fr"}
LANGUAGE_HINTS_BY_TAG: Final = {"zh-HK": "yue", "yue": "yue", "ru-RU": "ru", "ru": "ru"}


def language_hint(language: str | None) -> str | None:
    """The model's hint for an HA language tag ("zh-CN" -> "zh"), or None if it has none."""
    if not language:
        return None
    if hint := LANGUAGE_HINTS_BY_TAG.get(language):
        return hint
    return LANGUAGE_HINTS.get(language.split("-")[0].lower())


def join_sentences(sentences: list[str]) -> str:
    """Join recognised sentences: no space between Chinese ones, one between Latin ones."""
    text = ""
    for sentence in (s.strip() for s in sentences):
        if not sentence:
            continue
        if text and text[-1].isascii() and sentence[0].isascii():
            text += " "
        text += sentence
    return text


def _sentence_ended(sentence: dict[str, Any]) -> bool:
    if "sentence_end" in sentence:
        return bool(sentence["sentence_end"])
    return sentence.get("end_time") is not None  # what the SDK checks


class ParaformerClient(DashScopeModel):
    """Transcribe 16 kHz 16-bit mono PCM with Paraformer realtime."""

    default_model = DEFAULT_MODEL

    async def check(self, *, language: str | None = None) -> None:
        """Start a recognition task and close it: raises what a real request would."""
        await self._check_task("asr", "recognition", self._parameters(language))

    @staticmethod
    def _parameters(language: str | None) -> Payload:
        parameters: Payload = {"format": AUDIO_FORMAT, "sample_rate": SAMPLE_RATE}
        if hint := language_hint(language):
            parameters["language_hints"] = [hint]
        return parameters

    async def transcribe(
        self,
        audio: AsyncIterable[bytes],
        *,
        language: str | None = None,
        on_partial: Callable[[str], None] | None = None,
    ) -> str:
        """Stream audio as it arrives; return the transcript once the audio has ended."""
        task = await self._start_task("asr", "recognition", self._parameters(language))
        results = asyncio.create_task(self._collect(task, on_partial))
        try:
            frame = bytearray()
            async for chunk in audio:
                if results.done():
                    break  # failed (or ended) early: result() below says which
                frame += chunk
                if len(frame) >= AUDIO_FRAME_BYTES:
                    await task.send_audio(bytes(frame))
                    frame.clear()
            if not results.done():
                if frame:
                    await task.send_audio(bytes(frame))
                await task.finish()
            return await results
        finally:
            if not results.done():
                results.cancel()
            elif not results.cancelled():
                results.exception()  # retrieved: an early failure is raised above, not logged
            await task.close()

    async def _collect(self, task: DashScopeTask, on_partial: Callable[[str], None] | None) -> str:
        sentences: list[str] = []
        pending = ""
        async for result in task.results():
            if not isinstance(result, dict):
                continue  # the recognition service sends no audio
            sentence = (result.get("output") or {}).get("sentence")
            if not isinstance(sentence, dict) or sentence.get("heartbeat"):
                continue
            text = str(sentence.get("text") or "")
            if _sentence_ended(sentence):
                sentences.append(text)
                pending = ""
            else:
                pending = text
            if on_partial is not None:
                on_partial(join_sentences([*sentences, pending]))
        if pending:  # the last sentence was cut by the end of the audio
            sentences.append(pending)
        return join_sentences(sentences)
