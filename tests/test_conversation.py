"""The OpenAI-compatible agent, through the real `openai` client and a loopback chat service."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import timedelta
from typing import Any

from homeassistant.components import conversation
from homeassistant.components.assist_pipeline import async_get_pipeline, async_update_pipeline
from homeassistant.const import CONF_API_KEY, CONF_LLM_HASS_API, CONF_PROMPT, STATE_ON
from homeassistant.core import Context, HomeAssistant
from homeassistant.helpers import entity_registry as er, llm
from homeassistant.util import dt as dt_util
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_fire_time_changed

from custom_components.xiaozhi.const import (
    CONF_BASE_URL,
    CONF_MAX_TOKENS,
    CONF_MEMORY,
    CONF_MODEL,
    CONF_PRESET,
    CONF_TEMPERATURE,
    CONF_TIMEOUT,
    DOMAIN,
    PRESET_CUSTOM,
    SUBENTRY_CONVERSATION,
)
from custom_components.xiaozhi.core.messages import ListenMode
from custom_components.xiaozhi.memory import SAVE_DELAY_S, STORAGE_KEY
from tools.emulator import DeviceEmulator

from .llm_server import (
    API_KEY,
    MODEL,
    Error,
    LlmServer,
    Malformed,
    Reply,
    Stall,
    Stream,
    Text,
    Tool,
    async_start,
)
from .providers import Providers
from .test_assist_satellite import speak

type MakeDevice = Callable[..., Coroutine[Any, Any, DeviceEmulator]]
SUBENTRY_ID = "agent-subentry"
TIMEOUT_S = 1.5  # the agent's configured timeout: a stalled service fails this fast
SENTENCE_GAP_S = 0.5  # the reply goes on for 1 s after its first sentence
TURN_ON = "intent__HassTurnOn"  # Assist's tools are named after the integration providing them
REPLY = [
    "Done, the kitchen light is on now, so you can see what you are cooking. ",
    "Dinner smells great already. ",
    "Tell me if you need a timer.",
]


@pytest.fixture
async def llm_server(socket_enabled: None) -> AsyncIterator[LlmServer]:
    """The chat service, on loopback."""
    server = LlmServer()
    runner = await async_start(server)
    yield server
    server.released.set()
    await runner.cleanup()


def agent_data(base_url: str, **changes: Any) -> dict[str, Any]:
    """A conversation subentry's data, as the flow stores it."""
    return {
        CONF_PRESET: PRESET_CUSTOM,
        CONF_BASE_URL: base_url,
        CONF_API_KEY: API_KEY,
        CONF_MODEL: MODEL,
        CONF_PROMPT: "You are a kitchen assistant.",
        CONF_LLM_HASS_API: [llm.LLM_API_ASSIST],
        CONF_MEMORY: True,
        CONF_TEMPERATURE: 0.5,
        CONF_MAX_TOKENS: 200,
        CONF_TIMEOUT: TIMEOUT_S,
        **changes,
    }


@pytest.fixture
def hub_entry(providers: Providers, llm_server: LlmServer) -> MockConfigEntry:
    """The hub with one conversation agent, set up after the providers."""
    return MockConfigEntry(
        domain=DOMAIN,
        title="Xiaozhi",
        data={},
        subentries_data=[
            {
                "data": agent_data(llm_server.url),
                "subentry_id": SUBENTRY_ID,
                "subentry_type": SUBENTRY_CONVERSATION,
                "title": "Kitchen AI",
                "unique_id": None,
            }
        ],
    )


def agent_id(hass: HomeAssistant) -> str:
    entity_id = er.async_get(hass).async_get_entity_id("conversation", DOMAIN, SUBENTRY_ID)
    assert entity_id is not None
    return entity_id


async def use_agent(hass: HomeAssistant, providers: Providers) -> None:
    """Voice turns go to the agent and a streaming TTS."""
    await async_update_pipeline(
        hass,
        async_get_pipeline(hass),
        conversation_engine=agent_id(hass),
        tts_engine=providers.streaming_tts.entity_id,
    )


async def converse(hass: HomeAssistant, text: str, device_id: str | None) -> str:
    result = await conversation.async_converse(
        hass, text, None, Context(), language="en", agent_id=agent_id(hass), device_id=device_id
    )
    return str(result.response.speech["plain"]["speech"])


async def test_voice_turn_calls_a_tool_and_speaks_while_streaming(
    hass: HomeAssistant,
    providers: Providers,
    make_device: MakeDevice,
    llm_server: LlmServer,
    speech: bytes,
) -> None:
    await use_agent(hass, providers)
    llm_server.script(
        Stream([Tool(TURN_ON, {"name": "Kitchen Light"})]),
        Stream([Text(REPLY[0]), Text(REPLY[1], SENTENCE_GAP_S), Text(REPLY[2], SENTENCE_GAP_S)]),
    )
    device = await make_device()
    await device.connect()
    mic = await speak(device, speech, ListenMode.AUTO)
    await device.wait_for("llm")  # the agent has answered
    await device.wait_for_audio()
    mic.cancel()

    assert hass.states.get(providers.light.entity_id).state == STATE_ON
    first, second = llm_server.requests
    assert first["stream"] is True
    assert first["model"] == MODEL
    assert TURN_ON in {tool["function"]["name"] for tool in first["tools"]}
    assert first["messages"][-1] == {"role": "user", "content": "turn on the kitchen light"}
    call, result = second["messages"][-2:]
    assert call["tool_calls"][0]["function"]["name"] == TURN_ON
    assert result["role"] == "tool"
    assert result["tool_call_id"] == call["tool_calls"][0]["id"] == "call_1"
    assert "Kitchen Light" in result["content"]
    assert "error" not in result["content"]
    assert device.received.of_type("llm")[0]["emotion"] == "happy"

    # The first sentence reached the device while the model was still writing.
    assert llm_server.last_token_at is not None
    assert device.received.audio[0][0] < llm_server.last_token_at
    first_sentence = device.received.of_type("tts", "sentence_start")[0]["text"]
    assert REPLY[0].startswith(first_sentence)


@pytest.mark.parametrize(
    ("reply", "spoken"),
    [
        (Error(401, "Incorrect API key", "invalid_api_key"), "rejected the API key"),
        (Error(429, "You exceeded your current quota", "insufficient_quota"), "out of credit"),
        (Stall(), "took too long"),
        (Malformed(), "cannot read"),
    ],
    ids=["unauthorized", "quota", "timeout", "malformed"],
)
async def test_service_failure_is_spoken_on_the_device(
    hass: HomeAssistant,
    providers: Providers,
    make_device: MakeDevice,
    llm_server: LlmServer,
    speech: bytes,
    reply: Reply,
    spoken: str,
) -> None:
    await use_agent(hass, providers)
    llm_server.script(reply)
    device = await make_device()
    await device.connect()
    mic = await speak(device, speech, ListenMode.AUTO)
    sentence = await device.wait_for("tts", "sentence_start")
    await device.wait_for_audio()  # heard, not only shown
    mic.cancel()

    assert sentence["text"].startswith("Sorry,")
    assert spoken in sentence["text"]
    assert device.received.of_type("llm")[0]["emotion"] == "confused"
    assert device.received.of_type("tts", "start")
    assert not device.received.of_type("alert")  # an answer, not a pipeline failure
    if isinstance(reply, Stall):
        # The whole message plays and the device is left listening, not stuck speaking.
        await device.wait_for("tts", "stop")
        assert len(device.received.of_type("tts", "start")) == 1


async def test_failure_is_said_in_the_conversation_language(
    hass: HomeAssistant, llm_server: LlmServer, ota_url: str
) -> None:
    llm_server.script(Error(401))
    result = await conversation.async_converse(
        hass, "开灯", None, Context(), language="zh-CN", agent_id=agent_id(hass)
    )
    assert result.response.response_type.value == "error"
    assert result.response.speech["plain"]["speech"].startswith("抱歉，AI 服务拒绝了 API 密钥")


async def test_failure_mid_answer_ends_the_answer_with_the_error(
    hass: HomeAssistant, llm_server: LlmServer, ota_url: str
) -> None:
    """Text already streamed (maybe already spoken) is followed by what went wrong."""
    llm_server.script(Stream([Text("Let me think. "), Tool("HassTurnOn", {"name": "x"})]), Stall())
    result = await conversation.async_converse(
        hass, "hello", None, Context(), language="en", agent_id=agent_id(hass)
    )
    assert result.response.response_type.value == "error"
    assert "took too long" in result.response.speech["plain"]["speech"]


async def test_memory_carries_over_and_is_forgotten(
    hass: HomeAssistant,
    llm_server: LlmServer,
    ota_url: str,
    hass_storage: dict[str, Any],
) -> None:
    llm_server.script(Stream([Text("Nice to meet you, Ada.")]))
    assert await converse(hass, "My name is Ada.", "device-1") == "Nice to meet you, Ada."
    assert "Ada" not in llm_server.system_prompt()

    # A new conversation with the same device remembers; another device does not.
    await converse(hass, "What is my name?", "device-1")
    prompt = llm_server.system_prompt()
    assert prompt.startswith("You are a kitchen assistant.")
    assert "User: My name is Ada.\nAssistant: Nice to meet you, Ada." in prompt
    await converse(hass, "What is my name?", "device-2")
    assert "Ada" not in llm_server.system_prompt()
    await converse(hass, "What is my name?", None)  # no device: no memory
    assert "Ada" not in llm_server.system_prompt()

    button = er.async_get(hass).async_get_entity_id(
        "button", DOMAIN, f"{SUBENTRY_ID}-forget_memory"
    )
    assert button is not None
    await hass.services.async_call("button", "press", {"entity_id": button}, blocking=True)
    await converse(hass, "What is my name?", "device-1")
    assert "Ada" not in llm_server.system_prompt()


async def test_memory_is_stored(
    hass: HomeAssistant, llm_server: LlmServer, hass_storage: dict[str, Any], ota_url: str
) -> None:
    """What was said before a restart is remembered after it."""
    hass_storage[STORAGE_KEY] = {
        "version": 1,
        "key": STORAGE_KEY,
        "data": {SUBENTRY_ID: {"device-1": [{"user": "I like tea.", "assistant": "Noted, tea."}]}},
    }
    await converse(hass, "What do I like?", "device-1")
    assert "User: I like tea.\nAssistant: Noted, tea." in llm_server.system_prompt()
    await converse(hass, "Thanks", "device-1")
    assert "User: What do I like?" in llm_server.system_prompt()


async def test_memory_is_deleted_with_the_hub(
    hass: HomeAssistant, llm_server: LlmServer, hass_storage: dict[str, Any], ota_url: str
) -> None:
    await converse(hass, "Remember me", "device-1")
    async_fire_time_changed(hass, dt_util.utcnow() + timedelta(seconds=SAVE_DELAY_S + 1))
    await hass.async_block_till_done()
    assert hass_storage[STORAGE_KEY]["data"][SUBENTRY_ID]["device-1"]
    await hass.config_entries.async_remove(hass.config_entries.async_entries(DOMAIN)[0].entry_id)
    await hass.async_block_till_done()
    assert STORAGE_KEY not in hass_storage
