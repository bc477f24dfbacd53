"""Cloud text-to-speech entities (hub subentries) against loopback services, through HA's TTS."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
import time
from typing import Any
from unittest.mock import patch

from homeassistant.components import tts
from homeassistant.config_entries import ConfigSubentry, ConfigSubentryData
from homeassistant.const import CONF_API_KEY
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import device_registry as dr, entity_registry as er
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.xiaozhi.const import (
    CONF_BASE_URL,
    CONF_PITCH,
    CONF_RATE,
    CONF_SERVICE,
    CONF_TIMEOUT,
    CONF_VOICE,
    CONF_VOLUME,
    DOMAIN,
    SERVICE_DASHSCOPE,
    SERVICE_EDGE,
    SUBENTRY_TTS,
)
from custom_components.xiaozhi.core.wav import WavStreamReader

from .cloud_servers import (
    DASHSCOPE_KEY,
    EDGE_CLIP_S,
    HOST,
    TTS_BYTES_PER_CHAR,
    TTS_SAMPLE_RATE,
    BlackHole,
    DashScopeServer,
    EdgeServer,
)

EDGE = "tts.edge_tts"
COSYVOICE = "tts.cosyvoice"
SHORT_TIMEOUT_S = 0.5
WAIT_S = 10.0
# An LLM writing Chinese; the first sentence is long enough (> 1 s of speech) to get past
# ffmpeg's output buffer when HA converts the audio for a satellite.
REPLY = ["好的，", "我来帮你", "打开客厅的灯，", "再把空调", "调到二十六度。", "今天天气", "很好。"]
WAV_16K = {
    tts.ATTR_PREFERRED_FORMAT: "wav",
    tts.ATTR_PREFERRED_SAMPLE_RATE: 16000,
    tts.ATTR_PREFERRED_SAMPLE_CHANNELS: 1,
    tts.ATTR_PREFERRED_SAMPLE_BYTES: 2,
}


def edge_subentry(**data: Any) -> ConfigSubentryData:
    return ConfigSubentryData(
        data={
            CONF_SERVICE: SERVICE_EDGE,
            CONF_VOICE: "zh-CN-XiaoxiaoNeural",
            CONF_RATE: 10,
            CONF_PITCH: -5,
            CONF_VOLUME: 0,
        }
        | data,
        subentry_type=SUBENTRY_TTS,
        title="Edge TTS",
        unique_id=None,
    )


def cosyvoice_subentry(url: str, **data: Any) -> ConfigSubentryData:
    return ConfigSubentryData(
        data={CONF_SERVICE: SERVICE_DASHSCOPE, CONF_API_KEY: DASHSCOPE_KEY, CONF_BASE_URL: url}
        | data,
        subentry_type=SUBENTRY_TTS,
        title="CosyVoice",
        unique_id=None,
    )


async def setup_hub(hass: HomeAssistant, *subentries: ConfigSubentryData) -> MockConfigEntry:
    entry = MockConfigEntry(domain=DOMAIN, title="Xiaozhi", data={}, subentries_data=subentries)
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done(wait_background_tasks=True)  # Edge's voice list
    return entry


async def speak(
    hass: HomeAssistant,
    engine: str,
    pieces: list[str],
    options: dict[str, Any] | None = None,
    language: str = "zh-CN",
) -> tuple[bytes, list[str]]:
    """Stream a reply through HA's TTS; the last piece is only written once audio has arrived.

    Returns the audio and the order of "first audio" and "last text": streaming puts the audio
    first (without streaming, the last text would wait in vain for `WAIT_S`).
    """
    stream = tts.async_create_stream(hass, engine, language, options)
    first_audio = asyncio.Event()
    order: list[str] = []

    async def reply() -> AsyncIterator[str]:
        for piece in pieces[:-1]:
            yield piece
        if len(pieces) > 1:
            try:
                await asyncio.wait_for(first_audio.wait(), WAIT_S)
            except TimeoutError:
                order.append("no audio yet")
            order.append("last text")
        yield pieces[-1]

    stream.async_set_message_stream(reply())
    audio = bytearray()
    async for chunk in stream.async_stream_result():
        if not first_audio.is_set():
            order.append("first audio")
            first_audio.set()
        audio += chunk
    return bytes(audio), order


async def test_entities_come_from_subentries(
    hass: HomeAssistant, ha_core: None, edge_server: EdgeServer, dashscope: DashScopeServer
) -> None:
    entry = await setup_hub(hass, edge_subentry(), cosyvoice_subentry(dashscope.url))

    entities = er.async_entries_for_config_entry(er.async_get(hass), entry.entry_id)
    by_id = {entity.entity_id: entity for entity in entities if entity.domain == "tts"}
    assert set(by_id) == {EDGE, COSYVOICE}
    for entity_id, manufacturer in ((EDGE, "Microsoft"), (COSYVOICE, "Alibaba Cloud")):
        entity = by_id[entity_id]
        assert entity.unique_id == entity.config_subentry_id
        device = dr.async_get(hass).async_get(entity.device_id or "")
        assert device is not None
        assert device.entry_type is dr.DeviceEntryType.SERVICE
        assert device.manufacturer == manufacturer
        assert hass.states.get(entity_id) is not None
    cosyvoice = tts.get_engine_instance(hass, COSYVOICE)
    assert cosyvoice is not None
    assert cosyvoice.supported_languages == ["en-US", "zh-CN"]
    assert cosyvoice.default_language == "zh-CN"
    assert cosyvoice.async_supports_streaming_input()


async def test_edge_speaks_a_chinese_reply_while_it_is_written(
    hass: HomeAssistant, ha_core: None, edge_server: EdgeServer
) -> None:
    await setup_hub(hass, edge_subentry())

    audio, order = await speak(hass, EDGE, REPLY)

    assert order == ["first audio", "last text"]
    texts = [request["text"] for request in edge_server.ssml]
    assert len(texts) >= 2  # sentence by sentence
    assert "".join(texts) == "".join(REPLY)
    assert (
        edge_server.ssml[0]
        | {
            "voice": "Microsoft Server Speech Text to Speech Voice (zh-CN, XiaoxiaoNeural)",
            "rate": "+10%",
            "pitch": "-5Hz",
            "volume": "+0%",
        }
        == edge_server.ssml[0]
    )
    assert audio == edge_server.audio_for(texts)  # MP3 as the service sent it (not converted)


async def test_edge_mp3_converted_for_a_satellite_still_streams(
    hass: HomeAssistant, ha_core: None, edge_server: EdgeServer
) -> None:
    """A satellite asks for 16 kHz WAV: HA's ffmpeg decodes the MP3 as it arrives."""
    await setup_hub(hass, edge_subentry())

    audio, order = await speak(hass, EDGE, REPLY, WAV_16K)

    assert order == ["first audio", "last text"]
    reader = WavStreamReader()
    pcm = reader.push(audio)
    assert (reader.sample_rate, reader.channels, reader.sample_width) == (16000, 1, 2)
    texts = [request["text"] for request in edge_server.ssml]
    clips = sum(edge_server.clips_for(len(text)) for text in texts)
    seconds = len(pcm) / 2 / 16000
    assert clips * EDGE_CLIP_S <= seconds < clips * EDGE_CLIP_S * 1.5  # + the MP3 padding


async def test_edge_options_voices_and_languages(
    hass: HomeAssistant, ha_core: None, edge_server: EdgeServer, hass_ws_client: Any
) -> None:
    await setup_hub(hass, edge_subentry())
    engine = tts.get_engine_instance(hass, EDGE)
    assert engine is not None
    assert "ja-JP" in engine.supported_languages  # from the service's list, not the fallback
    assert engine.default_language == "zh-CN"

    client = await hass_ws_client(hass)
    await client.send_json_auto_id(
        {"type": "tts/engine/voices", "engine_id": EDGE, "language": "zh-CN"}
    )
    response = await client.receive_json()
    assert response["result"]["voices"] == [
        {"voice_id": "zh-CN-XiaoxiaoNeural", "name": "Xiaoxiao (Female)"},
        {"voice_id": "zh-CN-YunxiNeural", "name": "Yunxi (Male)"},
    ]

    # Per-call options win over the subentry's; English gets an English voice by default.
    await speak(
        hass, EDGE, ["Hello there. ", "Bye."], {"voice": "zh-CN-YunxiNeural", "rate": "-20%"}
    )
    await speak(hass, EDGE, ["Hello there. ", "Bye."], language="en-US")
    voices = [(r["voice"].split(", ")[1].rstrip(")"), r["rate"]) for r in edge_server.ssml]
    assert voices == [
        ("YunxiNeural", "-20%"),
        ("YunxiNeural", "-20%"),
        ("EmmaMultilingualNeural", "+10%"),
        ("EmmaMultilingualNeural", "+10%"),
    ]

    with pytest.raises(HomeAssistantError, match="Invalid text-to-speech option"):
        await speak(hass, EDGE, ["你好。"], {"pitch": 500})


async def test_a_new_subentry_adds_its_entity(
    hass: HomeAssistant, ha_core: None, edge_server: EdgeServer, dashscope: DashScopeServer
) -> None:
    entry = await setup_hub(hass, edge_subentry())
    subentry = ConfigSubentry(**cosyvoice_subentry(dashscope.url))
    hass.config_entries.async_add_subentry(entry, subentry)
    await hass.async_block_till_done(wait_background_tasks=True)

    entity = er.async_get(hass).async_get(COSYVOICE)
    assert entity is not None
    assert entity.config_subentry_id == subentry.subentry_id
    audio, _ = await speak(hass, COSYVOICE, ["你好。"])
    assert audio
    assert hass.states.get(EDGE) is not None


async def test_edge_unreachable_fails_within_the_timeout(
    hass: HomeAssistant, ha_core: None, edge_server: EdgeServer
) -> None:
    hole = await BlackHole().start()
    try:
        await setup_hub(hass, edge_subentry(**{CONF_TIMEOUT: SHORT_TIMEOUT_S}))
        start = time.monotonic()
        with (
            patch("edge_tts.communicate.WSS_URL", f"ws://{HOST}:{hole.port}/edge/v1?x=1"),
            pytest.raises(HomeAssistantError, match=r"did not answer within 0\.5 s"),
        ):
            await asyncio.wait_for(speak(hass, EDGE, ["你好。"]), WAIT_S)
        assert time.monotonic() - start >= SHORT_TIMEOUT_S
    finally:
        await hole.close()


async def test_cosyvoice_speaks_a_chinese_reply_while_it_is_written(
    hass: HomeAssistant, ha_core: None, dashscope: DashScopeServer
) -> None:
    """Text goes up piece by piece; 24 kHz PCM comes back and HA converts it for a satellite."""
    await setup_hub(hass, cosyvoice_subentry(dashscope.url))

    audio, order = await speak(hass, COSYVOICE, REPLY, WAV_16K)

    assert order == ["first audio", "last text"]
    assert dashscope.texts() == REPLY
    assert dashscope.kinds() == ["run-task", *["continue-task"] * len(REPLY), "finish-task"]
    parameters = dashscope.log[0][1]["parameters"]
    assert (parameters["voice"], parameters["rate"], parameters["volume"]) == (
        "longxiaochun_v2",
        1.0,
        50,
    )
    reader = WavStreamReader()
    pcm = reader.push(audio)
    assert reader.sample_rate == 16000
    sent_seconds = len("".join(REPLY)) * TTS_BYTES_PER_CHAR / 2 / TTS_SAMPLE_RATE
    assert abs(len(pcm) / 2 / 16000 - sent_seconds) < 0.05


async def test_cosyvoice_voices_and_options(
    hass: HomeAssistant, ha_core: None, dashscope: DashScopeServer, hass_ws_client: Any
) -> None:
    await setup_hub(hass, cosyvoice_subentry(dashscope.url, **{CONF_VOICE: "longwan_v2"}))
    client = await hass_ws_client(hass)
    await client.send_json_auto_id(
        {"type": "tts/engine/voices", "engine_id": COSYVOICE, "language": "en-US"}
    )
    voices = [voice["voice_id"] for voice in (await client.receive_json())["result"]["voices"]]
    assert voices[:2] == ["longxiaochun_v2", "longxiaoxia_v2"]
    assert "loongeva_v2" in voices
    assert "longwan_v2" not in voices  # Chinese only

    await speak(hass, COSYVOICE, ["你好。"])
    await speak(hass, COSYVOICE, ["Hi."], {"voice": "loongeva_v2", "rate": 50, "volume": -50})
    runs = [value["parameters"] for kind, value in dashscope.log if kind == "run-task"]
    assert [(r["voice"], r["rate"], r["volume"]) for r in runs] == [
        ("longwan_v2", 1.0, 50),
        ("loongeva_v2", 1.5, 25),
    ]


@pytest.mark.parametrize(
    ("problem", "message"),
    [
        ("task failed", "InvalidParameter: voice not found"),
        ("wrong key", r"refused the API key \(401\)"),
        ("no answer", r"did not finish within 0\.5 s"),
    ],
)
async def test_cosyvoice_errors(
    hass: HomeAssistant, ha_core: None, dashscope: DashScopeServer, problem: str, message: str
) -> None:
    data: dict[str, Any] = {CONF_TIMEOUT: SHORT_TIMEOUT_S}
    if problem == "task failed":
        dashscope.fail_task = ("InvalidParameter", "voice not found")
    elif problem == "wrong key":
        data[CONF_API_KEY] = "sk-wrong"
    else:
        dashscope.stall_after_finish = True
    await setup_hub(hass, cosyvoice_subentry(dashscope.url, **data))

    with pytest.raises(HomeAssistantError, match=message):
        await asyncio.wait_for(speak(hass, COSYVOICE, ["你好。"]), WAIT_S)
