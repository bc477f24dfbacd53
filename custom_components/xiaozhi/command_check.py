"""Whether the words heard so far already make a whole command: the early end of a turn.

Silence alone cannot end a turn both soon and safely: a command may pause inside for 300 ms
("turn on the ... kitchen light"), so the silence that ends it must be longer than that. When
the endpointer reports a short pause, the satellite asks here whether the audio so far is a
command Home Assistant understands: the Assistant's own speech-to-text engine transcribes a
copy of it, and the built-in agent's intent recognizer (in the Assistant's language, strict
matching on exposed entities, as "prefer handling commands locally" does) or a sentence
trigger must match the words. If so the turn ends at the pause; if not, the long silence still
decides. The check costs a second transcription of the audio so far (the pipeline's STT goes
on with its own stream and transcribes it again); the recognizer runs in the executor and
caches what it matched, which the pipeline's own intent stage then finds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from homeassistant.components import stt
from homeassistant.components.assist_pipeline import Pipeline
from homeassistant.components.conversation import HOME_ASSISTANT_AGENT, ConversationInput
from homeassistant.components.conversation.agent_manager import get_agent_manager
from homeassistant.const import MATCH_ALL
from homeassistant.core import Context, HomeAssistant


@dataclass(frozen=True, slots=True)
class Heard:
    """What one check found: the words, and whether they make a command."""

    text: str
    command: bool


def check_language(pipeline: Pipeline) -> str:
    """The language the pipeline's intent stage matches in (its rule for an LLM agent too)."""
    if pipeline.conversation_language == MATCH_ALL:
        return pipeline.stt_language or pipeline.tts_language or pipeline.language
    return pipeline.conversation_language


def can_check(hass: HomeAssistant, pipeline: Pipeline) -> bool:
    """Whether the pipeline has an STT engine and Home Assistant its built-in recognizer."""
    return (
        pipeline.stt_engine is not None
        and stt.async_get_speech_to_text_engine(hass, pipeline.stt_engine) is not None
        and get_agent_manager(hass).default_agent is not None
    )


async def async_prepare(hass: HomeAssistant, pipeline: Pipeline) -> None:
    """Load the recognizer's sentences for the pipeline's language (once; the first costs)."""
    if (agent := get_agent_manager(hass).default_agent) is not None:
        await agent.async_prepare(check_language(pipeline))


async def async_check(
    hass: HomeAssistant,
    pipeline: Pipeline,
    pcm: bytes,
    *,
    device_id: str | None,
    satellite_id: str | None,
) -> Heard:
    """Transcribe `pcm` with the pipeline's STT and match the words as a command."""
    text = await async_transcribe(hass, pipeline, pcm)
    if not text:
        return Heard("", command=False)
    agent = get_agent_manager(hass).default_agent
    if agent is None:
        return Heard(text, command=False)
    user_input = ConversationInput(
        text=text,
        context=Context(),
        conversation_id=None,
        device_id=device_id,
        satellite_id=satellite_id,
        language=check_language(pipeline),
        agent_id=HOME_ASSISTANT_AGENT,
    )
    if await agent.async_recognize_sentence_trigger(user_input) is not None:
        return Heard(text, command=True)
    result = await agent.async_recognize_intent(user_input, strict_intents_only=True)
    return Heard(text, command=result is not None and not result.unmatched_entities)


async def async_transcribe(hass: HomeAssistant, pipeline: Pipeline, pcm: bytes) -> str:
    """The words in `pcm` (16 kHz 16-bit mono) by the pipeline's STT engine; "" if none."""
    if (
        pipeline.stt_engine is None
        or (engine := stt.async_get_speech_to_text_engine(hass, pipeline.stt_engine)) is None
    ):
        return ""
    metadata = stt.SpeechMetadata(  # what assist_satellite's pipeline gives the engine too
        language=pipeline.stt_language or pipeline.language,
        format=stt.AudioFormats.WAV,
        codec=stt.AudioCodecs.PCM,
        bit_rate=stt.AudioBitRates.BITRATE_16,
        sample_rate=stt.AudioSampleRates.SAMPLERATE_16000,
        channel=stt.AudioChannels.CHANNEL_MONO,
    )
    if not engine.check_metadata(metadata):
        return ""

    async def audio() -> AsyncIterator[bytes]:
        yield pcm

    result = await engine.async_process_audio_stream(metadata, audio())
    if result.result is not stt.SpeechResultState.SUCCESS:
        return ""
    return (result.text or "").strip()
