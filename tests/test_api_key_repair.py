"""A cloud service that rejects its API key at run time: the repair that asks for a new one.

HA has no reauthentication step for subentries, so the repair's fix flow is it: the new key is
checked as the service's subentry flow checks it, then saved in the subentry.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from homeassistant.components import conversation, stt, tts
from homeassistant.config_entries import SOURCE_RECONFIGURE, ConfigEntry
from homeassistant.const import CONF_API_KEY, CONF_LLM_HASS_API
from homeassistant.core import Context, HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import entity_registry as er, issue_registry as ir, llm
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.xiaozhi.const import (
    CONF_BASE_URL,
    CONF_MAX_TOKENS,
    CONF_MEMORY,
    CONF_MODEL,
    CONF_PRESET,
    CONF_SERVICE,
    CONF_TEMPERATURE,
    CONF_TIMEOUT,
    CONF_VOICE,
    DOMAIN,
    PRESET_CUSTOM,
    SERVICE_DASHSCOPE,
    SERVICE_OPENAI,
    SUBENTRY_CONVERSATION,
    SUBENTRY_STT,
    SUBENTRY_TTS,
)
from custom_components.xiaozhi.issues import api_key_issue_id, async_api_key_rejected

from .audio import tone
from .cloud_servers import DASHSCOPE_KEY, OPENAI_KEY, DashScopeServer, OpenAiServer
from .conftest import async_fix, async_start_fix
from .llm_server import API_KEY, DEFAULT_ANSWER, MODEL, LlmServer, async_start

# The openai client leaves a finished stream's generators (its SSE decoder, httpx's body) to the
# garbage collector, whose finalizer closes them in tasks whenever it runs; with the agent
# reloaded mid-test that can be at teardown. HA's own marker for library-made leftovers.
pytestmark = pytest.mark.parametrize("expected_lingering_tasks", [True])

REVOKED = "sk-revoked"
SUBENTRY_ID = "service"
REJECTED_ANSWER = "Sorry, the AI service rejected the API key. Check it in the Xiaozhi settings."
METADATA = stt.SpeechMetadata(
    language="zh-CN",
    format=stt.AudioFormats.WAV,
    codec=stt.AudioCodecs.PCM,
    bit_rate=stt.AudioBitRates.BITRATE_16,
    sample_rate=stt.AudioSampleRates.SAMPLERATE_16000,
    channel=stt.AudioChannels.CHANNEL_MONO,
)


@pytest.fixture
async def llm_server(socket_enabled: None) -> AsyncIterator[LlmServer]:
    """The chat service, on loopback."""
    server = LlmServer()
    runner = await async_start(server)
    yield server
    server.released.set()
    await runner.cleanup()


@pytest.fixture
async def openai_server(socket_enabled: None) -> AsyncIterator[OpenAiServer]:
    """The transcription service, on loopback."""
    server = await OpenAiServer().start()
    yield server
    await server.close()


def agent_data(base_url: str, key: str) -> dict[str, Any]:
    """A conversation agent's settings, as its flow saves them."""
    return {
        CONF_PRESET: PRESET_CUSTOM,
        CONF_BASE_URL: base_url,
        CONF_API_KEY: key,
        CONF_MODEL: MODEL,
        CONF_LLM_HASS_API: [llm.LLM_API_ASSIST],
        CONF_MEMORY: False,
        CONF_TEMPERATURE: 0.5,
        CONF_MAX_TOKENS: 200,
        CONF_TIMEOUT: 5.0,
    }


async def setup_hub(
    hass: HomeAssistant, subentry_type: str, title: str, data: dict[str, Any]
) -> MockConfigEntry:
    """The hub with one cloud service."""
    entry = MockConfigEntry(
        domain=DOMAIN,
        title="Xiaozhi",
        data={},
        subentries_data=[
            {
                "data": data,
                "subentry_id": SUBENTRY_ID,
                "subentry_type": subentry_type,
                "title": title,
                "unique_id": None,
            }
        ],
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    return entry


def entity_id(hass: HomeAssistant, platform: str) -> str:
    found = er.async_get(hass).async_get_entity_id(platform, DOMAIN, SUBENTRY_ID)
    assert found is not None
    return found


def key_issue(hass: HomeAssistant) -> ir.IssueEntry | None:
    return ir.async_get(hass).async_get_issue(DOMAIN, api_key_issue_id(SUBENTRY_ID))


async def converse(hass: HomeAssistant) -> str:
    result = await conversation.async_converse(
        hass, "hi", None, Context(), language="en", agent_id=entity_id(hass, "conversation")
    )
    return str(result.response.speech["plain"]["speech"])


async def transcribe(hass: HomeAssistant) -> bool:
    """Whether the STT entity turned half a second of audio into text."""
    entity = stt.async_get_speech_to_text_entity(hass, entity_id(hass, "stt"))
    assert entity is not None

    async def audio() -> AsyncIterator[bytes]:
        yield tone(0.5, 16000)

    result = await entity.internal_async_process_audio_stream(METADATA, audio())
    return result.result is stt.SpeechResultState.SUCCESS


async def speak(hass: HomeAssistant) -> bool:
    """Whether the TTS entity spoke a sentence."""
    stream = tts.async_create_stream(hass, entity_id(hass, "tts"), "zh-CN", None)

    async def text() -> AsyncIterator[str]:
        yield "你好。"

    stream.async_set_message_stream(text())
    try:
        audio = b"".join([chunk async for chunk in stream.async_stream_result()])
    except HomeAssistantError:
        return False
    return bool(audio)


async def fix_the_key(hass: HomeAssistant, entry: ConfigEntry[Any], name: str, key: str) -> None:
    """The repair is up; its flow refuses another wrong key, then saves the right one and goes."""
    issue = key_issue(hass)
    assert issue is not None
    assert issue.is_fixable
    assert issue.severity is ir.IssueSeverity.ERROR
    assert issue.translation_key == "api_key_rejected"
    assert issue.translation_placeholders == {"name": name}
    before = dict(entry.subentries[SUBENTRY_ID].data)

    form = await async_start_fix(hass, api_key_issue_id(SUBENTRY_ID))
    assert form["step_id"] == "api_key"
    assert form["description_placeholders"] == {"name": name}
    result = await async_fix(hass, form["flow_id"], {CONF_API_KEY: "sk-also-wrong"})
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "invalid_auth"}
    assert entry.subentries[SUBENTRY_ID].data == before
    assert key_issue(hass) is not None

    result = await async_fix(hass, form["flow_id"], {CONF_API_KEY: key})
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert entry.subentries[SUBENTRY_ID].data == {**before, CONF_API_KEY: key}
    assert key_issue(hass) is None


async def test_an_agent_whose_key_is_rejected_gets_a_new_one_in_repairs(
    hass: HomeAssistant, ha_core: None, llm_server: LlmServer
) -> None:
    entry = await setup_hub(
        hass, SUBENTRY_CONVERSATION, "Kitchen AI", agent_data(llm_server.url, REVOKED)
    )
    assert key_issue(hass) is None
    assert await converse(hass) == REJECTED_ANSWER  # the device says it, too

    await fix_the_key(hass, entry, "Kitchen AI", API_KEY)
    # The agent was reloaded with the new key: it answers.
    assert await converse(hass) == DEFAULT_ANSWER
    assert key_issue(hass) is None


async def test_the_key_repair_goes_with_success_reconfigure_or_removal(
    hass: HomeAssistant, ha_core: None, llm_server: LlmServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = await setup_hub(
        hass, SUBENTRY_CONVERSATION, "Kitchen AI", agent_data(llm_server.url, REVOKED)
    )
    assert await converse(hass) == REJECTED_ANSWER
    assert key_issue(hass) is not None

    # The service takes the key again (the account was restored): the next answer clears it.
    monkeypatch.setattr("tests.llm_server.API_KEY", REVOKED)
    assert await converse(hass) == DEFAULT_ANSWER
    assert key_issue(hass) is None

    # A failure with a key the agent no longer has (a request made before it changed): no repair.
    async_api_key_rejected(hass, entry.subentries[SUBENTRY_ID], "sk-older")
    assert key_issue(hass) is None

    # Rejected again, then fixed with the service's Reconfigure: the repair goes.
    monkeypatch.setattr("tests.llm_server.API_KEY", API_KEY)
    assert await converse(hass) == REJECTED_ANSWER
    assert key_issue(hass) is not None
    result = await hass.config_entries.subentries.async_init(
        (entry.entry_id, SUBENTRY_CONVERSATION),
        context={"source": SOURCE_RECONFIGURE, "subentry_id": SUBENTRY_ID},
    )
    settings = agent_data(llm_server.url, API_KEY)
    del settings[CONF_PRESET]
    result = await hass.config_entries.subentries.async_configure(result["flow_id"], settings)
    assert result["reason"] == "reconfigure_successful"
    await hass.async_block_till_done()
    assert key_issue(hass) is None
    assert await converse(hass) == DEFAULT_ANSWER

    # Rejected again; the fix flow is open when the agent is deleted: the flow ends, and so
    # does the repair.
    monkeypatch.setattr("tests.llm_server.API_KEY", "sk-rotated")
    assert await converse(hass) == REJECTED_ANSWER
    form = await async_start_fix(hass, api_key_issue_id(SUBENTRY_ID))
    assert hass.config_entries.async_remove_subentry(entry, SUBENTRY_ID)
    await hass.async_block_till_done()
    assert key_issue(hass) is None
    result = await async_fix(hass, form["flow_id"], {CONF_API_KEY: "sk-rotated"})
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "subentry_gone"


@dataclass
class SpeechService:
    """A speech service's subentry, its working key, and how to tell it works."""

    subentry_type: str
    name: str
    data: dict[str, Any]
    key: str
    works: Callable[[HomeAssistant], Awaitable[bool]]


@pytest.fixture(params=["whisper", "paraformer", "cosyvoice"])
def speech_service(request: pytest.FixtureRequest) -> SpeechService:
    """Each speech service that takes a key, on its loopback server."""
    if request.param == "whisper":
        server: OpenAiServer = request.getfixturevalue("openai_server")
        data = {CONF_SERVICE: SERVICE_OPENAI, CONF_BASE_URL: server.base_url}
        return SpeechService(
            SUBENTRY_STT, "Whisper", data | {CONF_MODEL: "whisper-1"}, OPENAI_KEY, transcribe
        )
    dashscope: DashScopeServer = request.getfixturevalue("dashscope")
    data = {CONF_SERVICE: SERVICE_DASHSCOPE, CONF_BASE_URL: dashscope.url}
    if request.param == "paraformer":
        data |= {CONF_MODEL: "paraformer-realtime-v2"}
        return SpeechService(SUBENTRY_STT, "Paraformer", data, DASHSCOPE_KEY, transcribe)
    data |= {CONF_MODEL: "cosyvoice-v2", CONF_VOICE: "longxiaochun_v2"}
    return SpeechService(SUBENTRY_TTS, "CosyVoice", data, DASHSCOPE_KEY, speak)


async def test_a_speech_service_whose_key_is_rejected_gets_a_new_one_in_repairs(
    hass: HomeAssistant, ha_core: None, speech_service: SpeechService
) -> None:
    service = speech_service
    data = {**service.data, CONF_API_KEY: REVOKED, CONF_TIMEOUT: 5.0}
    entry = await setup_hub(hass, service.subentry_type, service.name, data)
    assert not await service.works(hass)

    await fix_the_key(hass, entry, service.name, service.key)
    assert await service.works(hass)
    assert key_issue(hass) is None
