"""Cloud speech-to-text entities (hub subentries) against loopback services, through HA's STT."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
import io
import logging
import time
from typing import Any
import wave

from homeassistant.components import stt
from homeassistant.config_entries import ConfigSubentryData
from homeassistant.const import CONF_API_KEY
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr, entity_registry as er
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.xiaozhi.const import (
    CONF_BASE_URL,
    CONF_LANGUAGE,
    CONF_MODEL,
    CONF_SERVICE,
    CONF_TIMEOUT,
    DOMAIN,
    SERVICE_DASHSCOPE,
    SERVICE_OPENAI,
    SUBENTRY_STT,
)

from .audio import tone
from .cloud_servers import (
    DASHSCOPE_KEY,
    HOST,
    OPENAI_KEY,
    DashScopeServer,
    OpenAiServer,
    closed_port,
)

PARAFORMER = "stt.paraformer"
WHISPER = "stt.whisper"
SHORT_TIMEOUT_S = 0.5
WAIT_S = 10.0
CHUNK_BYTES = 1280  # 40 ms: how a client uploads while the user speaks
SPEECH_CONTENT = "format=wav; codec=pcm; sample_rate=16000; bit_rate=16; channel=1; language={}"
METADATA = stt.SpeechMetadata(
    language="zh-CN",
    format=stt.AudioFormats.WAV,
    codec=stt.AudioCodecs.PCM,
    bit_rate=stt.AudioBitRates.BITRATE_16,
    sample_rate=stt.AudioSampleRates.SAMPLERATE_16000,
    channel=stt.AudioChannels.CHANNEL_MONO,
)


@pytest.fixture
async def openai_server(socket_enabled: None) -> AsyncIterator[OpenAiServer]:
    server = await OpenAiServer().start()
    yield server
    await server.close()


def paraformer_subentry(url: str, **data: Any) -> ConfigSubentryData:
    return ConfigSubentryData(
        data={CONF_SERVICE: SERVICE_DASHSCOPE, CONF_API_KEY: DASHSCOPE_KEY, CONF_BASE_URL: url}
        | data,
        subentry_type=SUBENTRY_STT,
        title="Paraformer",
        unique_id=None,
    )


def whisper_subentry(base_url: str, **data: Any) -> ConfigSubentryData:
    return ConfigSubentryData(
        data={
            CONF_SERVICE: SERVICE_OPENAI,
            CONF_API_KEY: OPENAI_KEY,
            CONF_BASE_URL: base_url,
            CONF_MODEL: "whisper-large-v3",
        }
        | data,
        subentry_type=SUBENTRY_STT,
        title="Whisper",
        unique_id=None,
    )


async def setup_hub(hass: HomeAssistant, *subentries: ConfigSubentryData) -> MockConfigEntry:
    entry = MockConfigEntry(domain=DOMAIN, title="Xiaozhi", data={}, subentries_data=subentries)
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    return entry


async def transcribe(hass: HomeAssistant, entity_id: str, pcm: bytes) -> stt.SpeechResult:
    entity = stt.async_get_speech_to_text_entity(hass, entity_id)
    assert entity is not None

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(pcm), CHUNK_BYTES):
            yield pcm[start : start + CHUNK_BYTES]

    return await entity.internal_async_process_audio_stream(METADATA, chunks())


async def test_entities_come_from_subentries(
    hass: HomeAssistant, ha_core: None, dashscope: DashScopeServer, openai_server: OpenAiServer
) -> None:
    entry = await setup_hub(
        hass, paraformer_subentry(dashscope.url), whisper_subentry(openai_server.base_url)
    )

    entities = er.async_entries_for_config_entry(er.async_get(hass), entry.entry_id)
    by_id = {entity.entity_id: entity for entity in entities if entity.domain == "stt"}
    assert set(by_id) == {PARAFORMER, WHISPER}
    devices = dr.async_get(hass)
    for entity_id, model in ((PARAFORMER, "paraformer-realtime-v2"), (WHISPER, "whisper-large-v3")):
        entity = by_id[entity_id]
        assert entity.unique_id == entity.config_subentry_id
        assert entity.config_subentry_id in entry.subentries
        device = devices.async_get(entity.device_id or "")
        assert device is not None
        assert device.entry_type is dr.DeviceEntryType.SERVICE
        assert device.model == model
        assert device.name == entry.subentries[entity.config_subentry_id].title
        assert hass.states.get(entity_id) is not None
    engine = stt.async_get_speech_to_text_engine(hass, PARAFORMER)
    assert engine is not None
    assert "zh-CN" in engine.supported_languages


async def test_paraformer_streams_while_the_user_speaks(
    hass: HomeAssistant, ha_core: None, hass_client: Any, dashscope: DashScopeServer
) -> None:
    """Audio posted to HA's STT API reaches the service before the upload has ended."""
    await setup_hub(hass, paraformer_subentry(dashscope.url))
    client = await hass_client()
    pcm = tone(1.0, 16000)
    upload_ended_after_audio_seen: list[bool] = []

    async def upload() -> AsyncIterator[bytes]:
        for start in range(0, len(pcm), CHUNK_BYTES):
            yield pcm[start : start + CHUNK_BYTES]
            await asyncio.sleep(0.005)
        # The user is still "speaking": the service must already have audio.
        await asyncio.wait_for(dashscope.audio_seen.wait(), WAIT_S)
        upload_ended_after_audio_seen.append(True)

    response = await client.post(
        f"/api/stt/{PARAFORMER}",
        data=upload(),
        headers={"X-Speech-Content": SPEECH_CONTENT.format("zh-CN")},
    )

    assert response.status == 200
    assert await response.json() == {"text": "打开客厅的灯。谢谢。", "result": "success"}
    assert upload_ended_after_audio_seen == [True]
    assert dashscope.kinds() == ["run-task", "audio", "finish-task"]
    assert sum(size for kind, size in dashscope.log if kind == "audio") == len(pcm)
    assert dashscope.log[0][1]["parameters"]["language_hints"] == ["zh"]


async def test_paraformer_language_from_the_subentry(
    hass: HomeAssistant, ha_core: None, dashscope: DashScopeServer
) -> None:
    await setup_hub(hass, paraformer_subentry(dashscope.url, **{CONF_LANGUAGE: "en"}))
    result = await transcribe(hass, PARAFORMER, tone(0.3, 16000))
    assert result.result is stt.SpeechResultState.SUCCESS
    assert dashscope.log[0][1]["parameters"]["language_hints"] == ["en"]


@pytest.mark.parametrize(
    ("problem", "logged"),
    [
        ("task failed", "ResponseTimeout: busy"),
        ("wrong key", "refused the API key (401)"),
        ("refused", "Cannot reach DashScope"),
        ("no answer", "did not finish within 0.5 s"),
    ],
)
async def test_paraformer_errors(
    hass: HomeAssistant,
    ha_core: None,
    dashscope: DashScopeServer,
    caplog: pytest.LogCaptureFixture,
    problem: str,
    logged: str,
) -> None:
    data: dict[str, Any] = {CONF_TIMEOUT: SHORT_TIMEOUT_S}
    url = dashscope.url
    if problem == "task failed":
        dashscope.fail_after_audio = ("ResponseTimeout", "busy")
    elif problem == "wrong key":
        data[CONF_API_KEY] = "sk-wrong"
    elif problem == "refused":
        url = f"ws://{HOST}:{closed_port()}/api-ws/v1/inference"
    else:
        dashscope.stall_after_finish = True
    await setup_hub(hass, paraformer_subentry(url, **data))

    with caplog.at_level(logging.WARNING):
        result = await asyncio.wait_for(transcribe(hass, PARAFORMER, tone(0.5, 16000)), WAIT_S)

    assert result == stt.SpeechResult(None, stt.SpeechResultState.ERROR)
    lines = [r for r in caplog.records if r.name == "custom_components.xiaozhi.stt"]
    assert len(lines) == 1
    assert logged in lines[0].getMessage()
    assert PARAFORMER in lines[0].getMessage()


async def test_whisper_transcribes_a_wav_upload(
    hass: HomeAssistant, ha_core: None, openai_server: OpenAiServer
) -> None:
    await setup_hub(hass, whisper_subentry(openai_server.base_url))
    pcm = tone(0.5, 16000)

    result = await transcribe(hass, WHISPER, pcm)

    assert result == stt.SpeechResult("打开客厅的灯", stt.SpeechResultState.SUCCESS)
    (request,) = openai_server.requests
    assert request["authorization"] == f"Bearer {OPENAI_KEY}"
    assert request["model"] == "whisper-large-v3"
    assert request["language"] == "zh"
    assert request["response_format"] == "json"
    with wave.open(io.BytesIO(request["file"])) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (16000, 1, 2)
        assert wav.readframes(wav.getnframes()) == pcm


@pytest.mark.parametrize(
    ("problem", "logged"),
    [
        ("wrong key", "refused the API key"),
        ("server error", "Transcription failed"),
        ("refused", "Transcription failed"),
        ("no answer", "No transcript within 0.5 s"),
    ],
)
async def test_whisper_errors(
    hass: HomeAssistant,
    ha_core: None,
    openai_server: OpenAiServer,
    caplog: pytest.LogCaptureFixture,
    problem: str,
    logged: str,
) -> None:
    # Only the stalled server needs the short timeout; the others must fail for their own
    # reason even on a loaded machine.
    timeout = SHORT_TIMEOUT_S if problem == "no answer" else WAIT_S / 2
    data: dict[str, Any] = {CONF_TIMEOUT: timeout}
    base_url = openai_server.base_url
    if problem == "wrong key":
        data[CONF_API_KEY] = "sk-wrong"
    elif problem == "server error":
        openai_server.status = 503
    elif problem == "refused":
        base_url = f"http://{HOST}:{closed_port()}/v1"
    else:
        openai_server.stall = True
    await setup_hub(hass, whisper_subentry(base_url, **data))

    start = time.monotonic()
    with caplog.at_level(logging.WARNING):
        result = await asyncio.wait_for(transcribe(hass, WHISPER, tone(0.3, 16000)), WAIT_S)

    assert result == stt.SpeechResult(None, stt.SpeechResultState.ERROR)
    lines = [r for r in caplog.records if r.name == "custom_components.xiaozhi.stt"]
    assert len(lines) == 1
    assert logged in lines[0].getMessage()
    if problem == "no answer":
        assert time.monotonic() - start >= SHORT_TIMEOUT_S
