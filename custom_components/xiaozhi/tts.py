"""Text to speech with cloud services, each configured as a subentry of the hub.

Both engines take streamed text: Edge speaks each sentence as soon as it is complete, CosyVoice
gets every piece of text as it is written. So an LLM reply starts playing before it is finished.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
import logging
from typing import Any, Final, override

from homeassistant.components import tts
from homeassistant.components.tts.entity import TTSAudioRequest
from homeassistant.config_entries import ConfigSubentry
from homeassistant.const import CONF_API_KEY
from homeassistant.core import HomeAssistant, callback
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers.aiohttp_client import async_get_clientsession
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .cloud import SpeechServiceError, cosyvoice, edge
from .cloud.audio import wav_stream_header
from .cloud.dashscope import DEFAULT_URL as DASHSCOPE_URL
from .const import (
    CONF_BASE_URL,
    CONF_LANGUAGE,
    CONF_MODEL,
    CONF_PITCH,
    CONF_RATE,
    CONF_SERVICE,
    CONF_VOICE,
    CONF_VOLUME,
    DOMAIN,
    SERVICE_DASHSCOPE,
    SERVICE_EDGE,
    SUBENTRY_TTS,
)
from .hub import XiaozhiConfigEntry
from .issues import async_api_key_rejected, async_delete_api_key_issue
from .service_check import CheckError, classify
from .subentry import XiaozhiServiceEntity, async_add_subentry_entities, service_timeout

_LOGGER = logging.getLogger(__name__)

PARALLEL_UPDATES = 0

# Per-call options (their names are the subentry's keys): a change in percent, or hertz for pitch.
OPTION_RATE: Final = CONF_RATE
OPTION_PITCH: Final = CONF_PITCH
OPTION_VOLUME: Final = CONF_VOLUME
COSYVOICE_LANGUAGES: Final = ["en-US", "zh-CN"]
COSYVOICE_DEFAULT_LANGUAGE: Final = "zh-CN"


async def async_setup_entry(
    hass: HomeAssistant,
    entry: XiaozhiConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add one TTS entity per text-to-speech subentry."""

    async def entities(subentry: ConfigSubentry) -> list[tts.TextToSpeechEntity]:
        service = subentry.data.get(CONF_SERVICE)
        if service == SERVICE_EDGE:
            return [EdgeTtsEntity(subentry, edge.EdgeTtsClient(timeout=service_timeout(subentry)))]
        if service == SERVICE_DASHSCOPE:
            client = cosyvoice.CosyVoiceClient(
                async_get_clientsession(hass),
                subentry.data.get(CONF_API_KEY, ""),
                url=subentry.data.get(CONF_BASE_URL) or DASHSCOPE_URL,
                model=subentry.data.get(CONF_MODEL) or cosyvoice.DEFAULT_MODEL,
                timeout=service_timeout(subentry),
            )
            return [CosyVoiceTtsEntity(subentry, client)]
        _LOGGER.error("Unknown text-to-speech service %r in %s", service, subentry.title)
        return []

    await async_add_subentry_entities(entry, SUBENTRY_TTS, async_add_entities, entities)


def _error(key: str, engine: str, **placeholders: str) -> HomeAssistantError:
    """HA's error with a translated message (`exceptions.<key>`)."""
    return HomeAssistantError(
        translation_domain=DOMAIN,
        translation_key=key,
        translation_placeholders={"engine": engine, **placeholders},
    )


async def _ha_errors(audio: AsyncIterator[bytes], engine: str) -> AsyncGenerator[bytes]:
    """Pass audio through; a service failure becomes HA's error."""
    try:
        async for chunk in audio:
            yield chunk
    except SpeechServiceError as err:
        raise _error("tts_failed", engine, error=str(err)) from err


def _number(options: Mapping[str, Any], key: str, engine: str) -> float:
    value = options.get(key) or 0
    try:
        return float(value)
    except (TypeError, ValueError) as err:
        raise _error("tts_invalid_option", engine, error=f"{key}={value!r}") from err


class CloudTtsEntity(XiaozhiServiceEntity, tts.TextToSpeechEntity):
    """A TTS engine named after its subentry (as OpenAI's: the TTS manager needs a name)."""

    _attr_has_entity_name = False

    def __init__(self, subentry: ConfigSubentry, *, manufacturer: str, model: str) -> None:
        """Name the engine after the subentry."""
        super().__init__(subentry, manufacturer=manufacturer, model=model)
        self._attr_name = subentry.title


class EdgeTtsEntity(CloudTtsEntity):
    """Microsoft Edge read-aloud voices; MP3 out (HA converts it to what the player asks for)."""

    def __init__(self, subentry: ConfigSubentry, client: edge.EdgeTtsClient) -> None:
        """Start with the fallback voices; the service's list is fetched once added."""
        super().__init__(subentry, manufacturer="Microsoft", model="Edge read aloud")
        self._attr_supported_options = [tts.ATTR_VOICE, OPTION_RATE, OPTION_PITCH, OPTION_VOLUME]
        self._client = client
        self._voices_task: asyncio.Task[None] | None = None
        data = subentry.data
        self._voice: str | None = data.get(CONF_VOICE) or None
        self._attr_default_language = str(
            data.get(CONF_LANGUAGE) or self._voice_locale(self._voice) or edge.DEFAULT_LANGUAGE
        )
        self._attr_default_options = {
            OPTION_RATE: data.get(CONF_RATE, 0),
            OPTION_PITCH: data.get(CONF_PITCH, 0),
            OPTION_VOLUME: data.get(CONF_VOLUME, 0),
        }
        self._update_languages()

    @staticmethod
    def _voice_locale(voice: str | None) -> str | None:
        """The locale a voice id starts with ("zh-CN-XiaoxiaoNeural" -> "zh-CN")."""
        if not voice or voice.count("-") < 2:
            return None
        return "-".join(voice.split("-")[:2])

    @callback
    def _update_languages(self) -> None:
        languages = {voice.locale for voice in self._client.voices}
        languages.add(self._attr_default_language)
        self._attr_supported_languages = sorted(languages)

    @override
    async def async_added_to_hass(self) -> None:
        """Fetch the service's voices in the background."""
        await super().async_added_to_hass()
        self._async_refresh_voices()

    @override
    async def async_will_remove_from_hass(self) -> None:
        """Stop a fetch still running."""
        if self._voices_task is not None:
            self._voices_task.cancel()
        await super().async_will_remove_from_hass()

    @callback
    def _async_refresh_voices(self) -> None:
        if self._voices_task is not None and not self._voices_task.done():
            return

        async def refresh() -> None:
            await self._client.async_voices()
            self._update_languages()

        self._voices_task = self.hass.async_create_background_task(
            refresh(), f"{self.entity_id} voice list"
        )

    @callback
    @override
    def async_get_supported_voices(self, language: str) -> list[tts.Voice] | None:
        """The voices of a locale ("zh-CN") or of a language ("zh")."""
        self._async_refresh_voices()  # the client refetches only once its list is stale
        return [
            tts.Voice(voice.voice_id, voice.name)
            for voice in self._client.voices
            if language in (voice.locale, voice.locale.split("-")[0])
        ] or None

    def _voice_for(self, language: str, options: Mapping[str, Any]) -> str:
        """The asked voice; else the configured one if it speaks the language; else a default."""
        if voice := options.get(tts.ATTR_VOICE):
            return str(voice)
        configured = self._voice
        if (
            configured
            and (self._voice_locale(configured) or "").split("-")[0] == (language.split("-")[0])
        ):
            return configured
        if voice := edge.default_voice(language, self._client.voices):
            return voice
        if configured:
            return configured
        raise _error("tts_no_voice", str(self.name), language=language)

    @override
    async def async_stream_tts_audio(self, request: TTSAudioRequest) -> tts.TTSAudioResponse:
        """Speak each sentence as soon as its text is complete."""
        options = request.options
        try:
            prosody = {  # numbers (10) or Edge's own form ("+10%")
                "rate": edge.format_rate(options.get(OPTION_RATE) or 0),
                "pitch": edge.format_pitch(options.get(OPTION_PITCH) or 0),
                "volume": edge.format_volume(options.get(OPTION_VOLUME) or 0),
            }
        except ValueError as err:
            raise _error("tts_invalid_option", str(self.name), error=str(err)) from err
        voice = self._voice_for(request.language, options)
        audio = self._client.stream(request.message_gen, voice=voice, **prosody)
        return tts.TTSAudioResponse(edge.EXTENSION, _ha_errors(audio, str(self.name)))


class CosyVoiceTtsEntity(CloudTtsEntity):
    """CosyVoice over DashScope; text streamed in, 24 kHz PCM streamed out as WAV."""

    def __init__(self, subentry: ConfigSubentry, client: cosyvoice.CosyVoiceClient) -> None:
        """Use the client for every message."""
        super().__init__(subentry, manufacturer="Alibaba Cloud", model=cosyvoice.DEFAULT_MODEL)
        self._client = client
        self._attr_supported_options = [tts.ATTR_VOICE, OPTION_RATE, OPTION_VOLUME]
        self._attr_supported_languages = COSYVOICE_LANGUAGES
        data = subentry.data
        self._attr_default_language = str(data.get(CONF_LANGUAGE) or COSYVOICE_DEFAULT_LANGUAGE)
        self._attr_default_options = {
            tts.ATTR_VOICE: data.get(CONF_VOICE) or cosyvoice.DEFAULT_VOICE,
            OPTION_RATE: data.get(CONF_RATE, 0),
            OPTION_VOLUME: data.get(CONF_VOLUME, 0),
        }

    @callback
    @override
    def async_get_supported_voices(self, language: str) -> list[tts.Voice] | None:
        """A handful of the service's system voices that speak the language."""
        return [
            tts.Voice(voice.voice_id, voice.name) for voice in cosyvoice.voices_for(language)
        ] or None

    @override
    async def async_stream_tts_audio(self, request: TTSAudioRequest) -> tts.TTSAudioResponse:
        """Send text as it comes; return the audio as it is made (connection errors raise)."""
        options = request.options
        engine = str(self.name)
        try:
            pcm = await self._client.synthesize(
                request.message_gen,
                voice=str(options.get(tts.ATTR_VOICE) or cosyvoice.DEFAULT_VOICE),
                rate=cosyvoice.speech_rate(_number(options, OPTION_RATE, engine)),
                volume=cosyvoice.volume(_number(options, OPTION_VOLUME, engine)),
            )
        except SpeechServiceError as err:
            if classify(err) is CheckError.INVALID_AUTH:
                async_api_key_rejected(self.hass, self.subentry, self._api_key)
            raise _error("tts_failed", engine, error=str(err)) from err
        async_delete_api_key_issue(self.hass, self.subentry.subentry_id)  # the task started

        async def wav() -> AsyncGenerator[bytes]:
            yield wav_stream_header(cosyvoice.SAMPLE_RATE)
            async for chunk in _ha_errors(pcm, engine):
                yield chunk

        return tts.TTSAudioResponse("wav", wav())
