"""Speech to text with cloud services, each configured as a subentry of the hub."""

from __future__ import annotations

from collections.abc import AsyncIterable
import logging
from typing import Final, override

from homeassistant.components import stt
from homeassistant.config_entries import ConfigSubentry
from homeassistant.const import CONF_API_KEY
from homeassistant.core import HomeAssistant
from homeassistant.helpers.aiohttp_client import async_get_clientsession
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .cloud import SpeechServiceError, openai_stt, paraformer
from .cloud.audio import wav_file
from .cloud.dashscope import DEFAULT_URL as DASHSCOPE_URL
from .const import (
    CONF_BASE_URL,
    CONF_LANGUAGE,
    CONF_MODEL,
    CONF_SERVICE,
    SERVICE_DASHSCOPE,
    SERVICE_OPENAI,
    SUBENTRY_STT,
)
from .hub import XiaozhiConfigEntry
from .issues import async_api_key_rejected, async_delete_api_key_issue
from .service_check import CheckError, classify
from .subentry import (
    XiaozhiServiceEntity,
    async_add_subentry_entities,
    async_create_openai_client,
    service_timeout,
)

_LOGGER = logging.getLogger(__name__)

PARALLEL_UPDATES = 0

OPENAI_LANGUAGES: Final = [
    "ar-SA", "cs-CZ", "da-DK", "de-DE", "el-GR", "en-GB", "en-US", "es-ES", "fi-FI", "fr-FR",
    "he-IL", "hi-IN", "hu-HU", "id-ID", "it-IT", "ja-JP", "ko-KR", "nb-NO", "nl-NL", "pl-PL",
    "pt-BR", "pt-PT", "ro-RO", "ru-RU", "sv-SE", "th-TH", "tr-TR", "uk-UA", "vi-VN", "zh-CN",
    "zh-HK", "zh-TW",
]  # fmt: skip
PARAFORMER_LANGUAGES: Final = [
    "de-DE", "en-US", "fr-FR", "ja-JP", "ko-KR", "ru-RU", "zh-CN", "zh-HK",
]  # fmt: skip


async def async_setup_entry(
    hass: HomeAssistant,
    entry: XiaozhiConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add one STT entity per speech-to-text subentry."""

    async def entities(subentry: ConfigSubentry) -> list[CloudSttEntity]:
        service = subentry.data.get(CONF_SERVICE)
        if service == SERVICE_OPENAI:
            return [await _async_openai_entity(hass, subentry)]
        if service == SERVICE_DASHSCOPE:
            return [ParaformerSttEntity(subentry, _paraformer_client(hass, subentry))]
        _LOGGER.error("Unknown speech-to-text service %r in %s", service, subentry.title)
        return []

    await async_add_subentry_entities(entry, SUBENTRY_STT, async_add_entities, entities)


async def _async_openai_entity(hass: HomeAssistant, subentry: ConfigSubentry) -> OpenAiSttEntity:
    data = subentry.data
    client = await async_create_openai_client(
        hass, {**data, CONF_BASE_URL: data.get(CONF_BASE_URL) or openai_stt.DEFAULT_BASE_URL}
    )
    transcriber = openai_stt.OpenAiTranscriber(
        client,
        model=data.get(CONF_MODEL) or openai_stt.DEFAULT_MODEL,
        timeout=service_timeout(subentry),
    )
    return OpenAiSttEntity(subentry, transcriber)


def _paraformer_client(
    hass: HomeAssistant, subentry: ConfigSubentry
) -> paraformer.ParaformerClient:
    data = subentry.data
    return paraformer.ParaformerClient(
        async_get_clientsession(hass),
        data.get(CONF_API_KEY, ""),
        url=data.get(CONF_BASE_URL) or DASHSCOPE_URL,
        model=data.get(CONF_MODEL) or paraformer.DEFAULT_MODEL,
        timeout=service_timeout(subentry),
    )


class CloudSttEntity(XiaozhiServiceEntity, stt.SpeechToTextEntity):
    """Takes what Assist pipelines send: 16 kHz 16-bit mono PCM."""

    @property
    @override
    def supported_formats(self) -> list[stt.AudioFormats]:
        return [stt.AudioFormats.WAV]

    @property
    @override
    def supported_codecs(self) -> list[stt.AudioCodecs]:
        return [stt.AudioCodecs.PCM]

    @property
    @override
    def supported_bit_rates(self) -> list[stt.AudioBitRates]:
        return [stt.AudioBitRates.BITRATE_16]

    @property
    @override
    def supported_sample_rates(self) -> list[stt.AudioSampleRates]:
        return [stt.AudioSampleRates.SAMPLERATE_16000]

    @property
    @override
    def supported_channels(self) -> list[stt.AudioChannels]:
        return [stt.AudioChannels.CHANNEL_MONO]

    def _language(self, metadata: stt.SpeechMetadata) -> str:
        """The subentry's language if set, else the pipeline's."""
        return str(self.subentry.data.get(CONF_LANGUAGE) or metadata.language)

    def _failed(self, err: SpeechServiceError) -> stt.SpeechResult:
        _LOGGER.warning("%s: %s", self.entity_id, err)
        if classify(err) is CheckError.INVALID_AUTH:
            async_api_key_rejected(self.hass, self.subentry, self._api_key)
        return stt.SpeechResult(None, stt.SpeechResultState.ERROR)

    def _result(self, text: str) -> stt.SpeechResult:
        """The service answered (so it took the key): the text, or an error if it heard none."""
        async_delete_api_key_issue(self.hass, self.subentry.subentry_id)
        if not text:
            return stt.SpeechResult(None, stt.SpeechResultState.ERROR)
        return stt.SpeechResult(text, stt.SpeechResultState.SUCCESS)


class OpenAiSttEntity(CloudSttEntity):
    """Whisper-style transcription of the whole recording once it has ended."""

    def __init__(self, subentry: ConfigSubentry, transcriber: openai_stt.OpenAiTranscriber) -> None:
        """Use the transcriber for every run."""
        super().__init__(subentry, manufacturer="OpenAI-compatible", model=openai_stt.DEFAULT_MODEL)
        self.transcriber = transcriber

    @property
    @override
    def supported_languages(self) -> list[str]:
        return OPENAI_LANGUAGES

    @override
    async def async_process_audio_stream(
        self, metadata: stt.SpeechMetadata, stream: AsyncIterable[bytes]
    ) -> stt.SpeechResult:
        pcm = bytearray()
        async for chunk in stream:
            pcm += chunk
        wav = wav_file(
            bytes(pcm),
            metadata.sample_rate.value,
            metadata.bit_rate.value // 8,
            metadata.channel.value,
        )
        language = self._language(metadata).split("-")[0].lower()  # ISO 639-1
        try:
            text = await self.transcriber.transcribe(wav, language=language)
        except SpeechServiceError as err:
            return self._failed(err)
        return self._result(text)


class ParaformerSttEntity(CloudSttEntity):
    """Paraformer realtime: audio is sent while the user speaks, the text is ready at the end."""

    def __init__(self, subentry: ConfigSubentry, client: paraformer.ParaformerClient) -> None:
        """Use the client for every run."""
        super().__init__(subentry, manufacturer="Alibaba Cloud", model=paraformer.DEFAULT_MODEL)
        self._client = client

    @property
    @override
    def supported_languages(self) -> list[str]:
        return PARAFORMER_LANGUAGES

    @override
    async def async_process_audio_stream(
        self, metadata: stt.SpeechMetadata, stream: AsyncIterable[bytes]
    ) -> stt.SpeechResult:
        try:
            text = await self._client.transcribe(stream, language=self._language(metadata))
        except SpeechServiceError as err:
            return self._failed(err)
        return self._result(text)
