"""The "Xiaozhi device" LLM API in a voice turn, and the camera's vision endpoint."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from homeassistant.components import ai_task
from homeassistant.components.assist_pipeline import async_get_pipeline, async_update_pipeline
from homeassistant.config_entries import ConfigEntry, ConfigEntryState
from homeassistant.const import CONF_LLM_HASS_API
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import entity_registry as er
from homeassistant.setup import async_setup_component
import pytest
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    MockModule,
    mock_config_flow,
    mock_integration,
    mock_platform,
    setup_test_component_platform,
)

from custom_components.xiaozhi import vision
from custom_components.xiaozhi.const import (
    CONF_VISION_ENTITY,
    DOMAIN,
    LLM_API_ID,
    SUBENTRY_CONVERSATION,
)
from custom_components.xiaozhi.core.messages import ListenMode
from tools.audio import speech_pcm
from tools.mcp_server import TEST_JPEG

from .llm_server import LlmServer, Stream, Text, Tool, async_start
from .providers import Providers, ProvidersFlow
from .test_assist_satellite import speak
from .test_conversation import agent_data
from .test_device_tools import MakeDevice, connected_device, entity_id, wait_for

SUBENTRY_ID = "device-agent"
VOLUME_TOOL = "self_audio_speaker_set_volume"  # the firmware's name, as a function name
SPOKEN = "Done, the volume is at twenty."


class PhotoAnswers(ai_task.AITaskEntity):
    """Answers questions about the attached photo with what it received."""

    _attr_name = "Photo answers"
    _attr_unique_id = "photo-answers"
    _attr_supported_features = (
        ai_task.AITaskEntityFeature.GENERATE_DATA | ai_task.AITaskEntityFeature.SUPPORT_ATTACHMENTS
    )

    def __init__(self) -> None:
        self.photos: list[bytes] = []
        self.delay_s = 0.0

    async def _async_generate_data(
        self, task: ai_task.GenDataTask, chat_log: Any
    ) -> ai_task.GenDataTaskResult:
        await asyncio.sleep(self.delay_s)
        for attachment in task.attachments or []:
            self.photos.append(Path(attachment.path).read_bytes())
        return ai_task.GenDataTaskResult(
            conversation_id=chat_log.conversation_id,
            data=f"A photo of {len(self.photos[-1])} bytes; asked: {task.instructions}",
        )


@pytest.fixture(scope="module")
def speech() -> bytes:
    """What the user says."""
    return speech_pcm("turn your volume down to twenty")


@pytest.fixture
async def llm_server(socket_enabled: None) -> AsyncIterator[LlmServer]:
    """The chat service, on loopback."""
    server = LlmServer()
    runner = await async_start(server)
    yield server
    await runner.cleanup()


@pytest.fixture
async def answers(hass: HomeAssistant, providers: Providers) -> AsyncIterator[PhotoAnswers]:
    """A test ai_task entity that accepts images."""
    assert await async_setup_component(hass, ai_task.DOMAIN, {})
    entity = PhotoAnswers()

    async def setup_entry(hass: HomeAssistant, entry: ConfigEntry) -> bool:
        await hass.config_entries.async_forward_entry_setups(entry, [ai_task.DOMAIN])
        return True

    mock_integration(hass, MockModule("test", async_setup_entry=setup_entry))
    setup_test_component_platform(hass, ai_task.DOMAIN, [entity], from_config_entry=True)
    mock_platform(hass, "test.config_flow")
    entry = MockConfigEntry(domain="test")
    entry.add_to_hass(hass)
    with mock_config_flow("test", ProvidersFlow):
        assert await hass.config_entries.async_setup(entry.entry_id)
        await hass.async_block_till_done()
        assert entity.entity_id == "ai_task.photo_answers"
        yield entity


@pytest.fixture
def hub_entry(
    providers: Providers, llm_server: LlmServer, answers: PhotoAnswers
) -> MockConfigEntry:
    """The hub with an agent that may use the device's tools, and the vision entity chosen."""
    return MockConfigEntry(
        domain=DOMAIN,
        title="Xiaozhi",
        data={},
        options={CONF_VISION_ENTITY: "ai_task.photo_answers"},
        subentries_data=[
            {
                "data": agent_data(llm_server.url, **{CONF_LLM_HASS_API: [LLM_API_ID]}),
                "subentry_id": SUBENTRY_ID,
                "subentry_type": SUBENTRY_CONVERSATION,
                "title": "Device AI",
                "unique_id": None,
            }
        ],
    )


async def use_agent(hass: HomeAssistant, providers: Providers) -> None:
    agent = er.async_get(hass).async_get_entity_id("conversation", DOMAIN, SUBENTRY_ID)
    await async_update_pipeline(
        hass,
        async_get_pipeline(hass),
        conversation_engine=agent,
        tts_engine=providers.streaming_tts.entity_id,
    )


async def test_agent_calls_a_device_tool_during_a_voice_turn(
    hass: HomeAssistant,
    providers: Providers,
    make_device: MakeDevice,
    llm_server: LlmServer,
    speech: bytes,
) -> None:
    await use_agent(hass, providers)
    device = await connected_device(hass, make_device)
    llm_server.script(
        Stream([Tool(VOLUME_TOOL, {"volume": 20})]),
        Stream([Text(SPOKEN)]),
    )
    mic = await speak(device, speech, ListenMode.AUTO)
    sentence = await device.wait_for("tts", "sentence_start")
    await device.wait_for_audio()
    mic.cancel()

    assert ("self.audio_speaker.set_volume", {"volume": 20}) in device.mcp.calls
    assert device.mcp.volume == 20
    assert sentence["text"] == SPOKEN
    offered = {
        tool["function"]["name"]: tool["function"] for tool in llm_server.requests[0]["tools"]
    }
    assert VOLUME_TOOL in offered
    assert "self_led_strip_set_color" in offered  # board-specific tools too
    assert offered[VOLUME_TOOL]["parameters"]["properties"]["volume"] == {
        "type": "integer",
        "minimum": 0,
        "maximum": 100,
    }
    assert not {"self_reboot", "self_get_system_info"} & set(offered)  # user-only
    result = llm_server.requests[1]["messages"][-1]
    assert result["role"] == "tool" and "true" in result["content"]
    speaker = entity_id(hass, "media_player", device, "speaker")
    await wait_for(hass, lambda: hass.states.get(speaker).attributes.get("volume_level") == 0.2)


async def test_a_device_that_leaves_mid_call_fails_the_tool_at_once(
    hass: HomeAssistant, make_device: MakeDevice
) -> None:
    device = await connected_device(hass, make_device)
    device.mcp.delay["self.led_strip.set_color"] = 30.0
    hub = hass.config_entries.async_entries(DOMAIN)[0].runtime_data
    tools = hub.device_tools(hub.devices[device.device_id])
    call = asyncio.create_task(
        tools.async_call("self.led_strip.set_color", {"red": 1, "green": 2, "blue": 3})
    )
    await wait_for(hass, lambda: any(n == "self.led_strip.set_color" for n, _ in device.mcp.calls))
    await device.drop()
    async with asyncio.timeout(5):
        with pytest.raises(HomeAssistantError) as gone:
            await call
    assert gone.value.translation_key == "tool_device_gone"


async def test_camera_photo_is_answered_by_ai_task(
    hass: HomeAssistant, make_device: MakeDevice, answers: PhotoAnswers
) -> None:
    """The device's camera tool uploads as the firmware does; the answer is the tool's result."""
    device = await connected_device(hass, make_device)
    hub = hass.config_entries.async_entries(DOMAIN)[0].runtime_data
    tools = hub.device_tools(hub.devices[device.device_id])
    photo = TEST_JPEG + b"\0" * 50_000  # several chunks
    device.mcp.photo = photo

    text = await tools.async_call("self.camera.take_photo", {"question": "What is on the table?"})

    assert answers.photos == [photo]
    assert '"success": true' in text.replace('":true', '": true')
    assert "asked: What is on the table?" in text
    assert f"A photo of {len(photo)} bytes" in text
    image = entity_id(hass, "image", device, "last_photo")
    await wait_for(hass, lambda: hass.states.get(image).state not in ("unknown", "unavailable"))


async def test_vision_refuses_bad_tokens_and_oversized_photos(
    hass: HomeAssistant, make_device: MakeDevice, answers: PhotoAnswers, hass_client_no_auth: Any
) -> None:
    device = await connected_device(hass, make_device)
    assert device.mcp.vision_url is not None

    status, body = await device.mcp.upload_photo("hello", token="wrong")
    assert status == 401 and "token" in body
    status, _ = await device.mcp.upload_photo("hello", token="")
    assert status == 401
    status, body = await device.mcp.upload_photo(
        "big", photo=b"\xff" * (vision.MAX_PHOTO_BYTES + 1)
    )
    assert status == 413 and "too large" in body
    # Another device's token does not open this one's endpoint.
    other = await make_device()
    await other.connect()
    await wait_for(hass, lambda: other.mcp.vision_token is not None)
    status, _ = await device.mcp.upload_photo("hello", token=other.mcp.vision_token)
    assert status == 401
    assert answers.photos == []
    status, body = await device.mcp.upload_photo("hello")
    assert status == 200 and "asked: hello" in body


async def test_vision_answer_that_takes_too_long_is_a_clear_failure(
    hass: HomeAssistant,
    make_device: MakeDevice,
    answers: PhotoAnswers,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(vision, "ANSWER_TIMEOUT_S", 0.2)
    answers.delay_s = 1.0
    device = await connected_device(hass, make_device)
    status, body = await device.mcp.upload_photo("slow")
    assert status == 200 and '"success": false' in body.replace('":false', '": false')
    assert hass.config_entries.async_entries(DOMAIN)[0].state is ConfigEntryState.LOADED
