"""Test STT and TTS providers registered in a real HA, and a real light, for voice-turn tests.

They are real HA entities in the real stt/tts/light components: the pipeline, HA's built-in
conversation agent, its intents and the TTS format conversion (ffmpeg) all run for real.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator
import io
from typing import Any
import wave

from homeassistant.components import conversation, stt, tts
from homeassistant.components.assist_pipeline import (
    async_get_pipeline,
    async_update_pipeline,
)
from homeassistant.components.light import ColorMode, LightEntity
from homeassistant.config_entries import ConfigEntry, ConfigFlow
from homeassistant.const import Platform
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import area_registry as ar, entity_registry as er
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    MockModule,
    MockPlatform,
    mock_integration,
    mock_platform,
)

from custom_components.xiaozhi.core.sentences import SentenceSplitter

from .audio import tone, voiced_seconds

TEST_DOMAIN = "xiaozhi_test_providers"
TTS_SAMPLE_RATE = 16000  # HA converts it to the device's 24 kHz with ffmpeg
REPLY_SECONDS_PER_CHAR = 0.06
HEARD_FRACTION = 0.8  # a said part is transcribed once this much of its voice was heard


class RecordingStt(stt.SpeechToTextEntity):
    """Drains the audio it is given and returns a set transcript, or the words it heard.

    After `say()` it transcribes like a real engine would, from the voice in the audio: the
    words of each part of the command whose voice it has (nearly) all heard, so audio cut at a
    pause gives the words before the pause. It answers at once either way.
    """

    _attr_name = "Test STT"
    _attr_unique_id = "test-stt"

    def __init__(self) -> None:
        self.transcript = "turn on the kitchen light"
        self.received: list[int] = []  # bytes of audio per transcription
        self.started = 0  # transcriptions begun (a cancelled one returns nothing)
        self.delay = 0.0  # seconds it takes to answer once the audio has ended
        self.heard: list[str] = []  # what each transcription returned
        self.stream_ended = asyncio.Event()
        self._parts: list[tuple[str, float]] = []  # (words so far, voice needed to hear them)

    def say(self, pcm: bytes, parts: list[tuple[str, float]]) -> None:
        """The command in `pcm` (16 kHz 16-bit mono) has parts: (words, where they end, s)."""
        self._parts = []
        words: list[str] = []
        before = 0.0
        for text, end_s in parts:
            words.append(text)
            voice = voiced_seconds(pcm[: int(end_s * 16000) * 2])
            self._parts.append((" ".join(words), before + HEARD_FRACTION * (voice - before)))
            before = voice

    def transcribe(self, pcm: bytes) -> str:
        """The set transcript, or after `say()` the words whose voice `pcm` holds."""
        if not self._parts:
            return self.transcript
        voice = voiced_seconds(pcm)
        return next((text for text, needed in reversed(self._parts) if voice >= needed), "")

    @property
    def supported_languages(self) -> list[str]:
        return ["en-US", "zh-CN"]

    @property
    def supported_formats(self) -> list[stt.AudioFormats]:
        return [stt.AudioFormats.WAV]

    @property
    def supported_codecs(self) -> list[stt.AudioCodecs]:
        return [stt.AudioCodecs.PCM]

    @property
    def supported_bit_rates(self) -> list[stt.AudioBitRates]:
        return [stt.AudioBitRates.BITRATE_16]

    @property
    def supported_sample_rates(self) -> list[stt.AudioSampleRates]:
        return [stt.AudioSampleRates.SAMPLERATE_16000]

    @property
    def supported_channels(self) -> list[stt.AudioChannels]:
        return [stt.AudioChannels.CHANNEL_MONO]

    async def async_process_audio_stream(
        self, metadata: stt.SpeechMetadata, stream: AsyncIterable[bytes]
    ) -> stt.SpeechResult:
        self.started += 1
        audio = bytearray()
        async for chunk in stream:
            audio += chunk
        self.received.append(len(audio))
        self.stream_ended.set()
        if self.delay:
            await asyncio.sleep(self.delay)
        text = self.transcribe(bytes(audio))
        self.heard.append(text)
        if not text:
            return stt.SpeechResult(None, stt.SpeechResultState.ERROR)
        return stt.SpeechResult(text, stt.SpeechResultState.SUCCESS)


class ToneTts(tts.TextToSpeechEntity):
    """Speaks any message as a tone whose length follows the text."""

    _attr_name = "Test TTS"
    _attr_unique_id = "test-tts"

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.fail = False

    @property
    def supported_languages(self) -> list[str]:
        return ["en-US", "zh-CN"]

    @property
    def default_language(self) -> str:
        return "en-US"

    def get_tts_audio(
        self, message: str, language: str, options: dict[str, Any]
    ) -> tts.TtsAudioType:
        self.messages.append(message)
        if self.fail:
            return None, None
        seconds = max(1.0, REPLY_SECONDS_PER_CHAR * len(message))
        buffer = io.BytesIO()
        with wave.open(buffer, "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(TTS_SAMPLE_RATE)
            wav.writeframes(tone(seconds, TTS_SAMPLE_RATE))
        return "wav", buffer.getvalue()


def wav_header(sample_rate: int) -> bytes:
    """A WAV header for a stream of unknown length (as streaming engines write it)."""
    return (
        b"RIFF"
        + (0xFFFFFFFF).to_bytes(4, "little")
        + b"WAVEfmt "
        + (16).to_bytes(4, "little")
        + (1).to_bytes(2, "little")
        + (1).to_bytes(2, "little")
        + sample_rate.to_bytes(4, "little")
        + (sample_rate * 2).to_bytes(4, "little")
        + (2).to_bytes(2, "little")
        + (16).to_bytes(2, "little")
        + b"data"
        + (0xFFFFFFFF).to_bytes(4, "little")
    )


class StreamingTts(ToneTts):
    """Speaks each sentence as soon as its text has arrived (streaming input)."""

    _attr_name = "Streaming TTS"
    _attr_unique_id = "streaming-tts"

    def __init__(self) -> None:
        super().__init__()
        self.first_audio_at: float | None = None

    async def async_stream_tts_audio(self, request: tts.TTSAudioRequest) -> tts.TTSAudioResponse:
        async def audio() -> AsyncIterator[bytes]:
            yield wav_header(TTS_SAMPLE_RATE)
            splitter = SentenceSplitter()
            async for text in request.message_gen:
                for sentence in splitter.push(text):
                    self.messages.append(sentence)
                    if self.first_audio_at is None:
                        self.first_audio_at = asyncio.get_running_loop().time()
                    yield tone(REPLY_SECONDS_PER_CHAR * len(sentence), TTS_SAMPLE_RATE)
            if rest := splitter.flush():
                self.messages.append(rest)
                yield tone(REPLY_SECONDS_PER_CHAR * len(rest), TTS_SAMPLE_RATE)

        return tts.TTSAudioResponse("wav", audio())


STREAMED_REPLY = (
    "Sure, here is the plan for tonight. First, preheat the oven to two hundred degrees. "
    "Then bake the bread for twenty minutes and let it cool."
)
WORD_DELAY_S = 0.08


class StreamingAgent(conversation.ConversationEntity):
    """An agent that streams its reply word by word, like an LLM."""

    _attr_name = "Streaming agent"
    _attr_unique_id = "streaming-agent"
    _attr_supports_streaming = True

    def __init__(self) -> None:
        self.reply = STREAMED_REPLY
        self.word_delay = WORD_DELAY_S  # 0: an agent that answers at once
        self.finished_at: float | None = None
        self.conversation_ids: list[str] = []
        self.fail = False

    @property
    def supported_languages(self) -> list[str]:
        return ["en"]

    async def _async_handle_message(
        self, user_input: conversation.ConversationInput, chat_log: conversation.ChatLog
    ) -> conversation.ConversationResult:
        self.conversation_ids.append(chat_log.conversation_id)
        if self.fail:
            raise HomeAssistantError("the agent is down")

        async def deltas() -> AsyncIterator[conversation.AssistantContentDeltaDict]:
            yield {"role": "assistant"}
            for word in self.reply.split(" "):
                if self.word_delay:
                    await asyncio.sleep(self.word_delay)
                yield {"content": word + " "}

        async for _ in chat_log.async_add_delta_content_stream(self.entity_id, deltas()):
            pass
        self.finished_at = asyncio.get_running_loop().time()
        return conversation.async_get_result_from_chat_log(user_input, chat_log)


class KitchenLight(LightEntity):
    """A plain on/off light named so HA's intents find it."""

    _attr_name = "Kitchen Light"
    _attr_unique_id = "kitchen-light"
    _attr_color_mode = ColorMode.ONOFF
    _attr_supported_color_modes = {ColorMode.ONOFF}  # noqa: RUF012
    _attr_is_on = False

    async def async_turn_on(self, **kwargs: Any) -> None:
        self._attr_is_on = True
        self.async_write_ha_state()

    async def async_turn_off(self, **kwargs: Any) -> None:
        self._attr_is_on = False
        self.async_write_ha_state()


class ProvidersFlow(ConfigFlow):
    """The test integration's (empty) config flow."""


class Providers:
    """Handles to the test entities."""

    def __init__(self) -> None:
        self.stt = RecordingStt()
        self.tts = ToneTts()
        self.streaming_tts = StreamingTts()
        self.agent = StreamingAgent()
        self.light = KitchenLight()


async def async_setup_providers(hass: HomeAssistant) -> Providers:
    """Register the providers and the light, and make them the preferred pipeline's."""
    providers = Providers()
    entities = {
        Platform.STT: [providers.stt],
        Platform.TTS: [providers.tts, providers.streaming_tts],
        Platform.LIGHT: [providers.light],
        Platform.CONVERSATION: [providers.agent],
    }

    async def setup_entry(hass: HomeAssistant, entry: ConfigEntry) -> bool:
        await hass.config_entries.async_forward_entry_setups(entry, list(entities))
        return True

    mock_integration(hass, MockModule(TEST_DOMAIN, async_setup_entry=setup_entry))
    mock_platform(hass, f"{TEST_DOMAIN}.config_flow")
    for platform, platform_entities in entities.items():

        async def setup_platform(
            hass: HomeAssistant,
            entry: ConfigEntry,
            add: AddConfigEntryEntitiesCallback,
            platform_entities: list[Any] = platform_entities,
        ) -> None:
            add(platform_entities)

        mock_platform(
            hass, f"{TEST_DOMAIN}.{platform}", MockPlatform(async_setup_entry=setup_platform)
        )

    for component in ("homeassistant", "intent", "conversation", "light", "stt", "tts"):
        assert await async_setup_component(hass, component, {})
    entry = MockConfigEntry(domain=TEST_DOMAIN)
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    assert await async_setup_component(hass, "assist_pipeline", {})
    await hass.async_block_till_done()
    # The light is in another area than the satellites, so HA speaks its answer instead of
    # playing its short "acknowledge" chime.
    kitchen = ar.async_get(hass).async_create("Kitchen")
    er.async_get(hass).async_update_entity(providers.light.entity_id, area_id=kitchen.id)

    await async_update_pipeline(
        hass,
        async_get_pipeline(hass),
        conversation_engine="conversation.home_assistant",
        conversation_language="en",
        language="en",
        stt_engine=providers.stt.entity_id,
        stt_language="en-US",
        tts_engine=providers.tts.entity_id,
        tts_language="en-US",
        tts_voice=None,
    )
    return providers


async def async_use_streaming(hass: HomeAssistant, providers: Providers) -> None:
    """Switch the pipeline to the streaming agent and streaming TTS."""
    await async_update_pipeline(
        hass,
        async_get_pipeline(hass),
        conversation_engine=providers.agent.entity_id,
        tts_engine=providers.streaming_tts.entity_id,
    )
