"""Subentry flows of the hub: conversation agents, speech-to-text and text-to-speech services."""

from __future__ import annotations

from collections.abc import AsyncIterator
import errno
import socket
from types import MappingProxyType
from typing import Any
from unittest.mock import MagicMock, patch

import aiohttp
from homeassistant.config_entries import (
    SOURCE_RECONFIGURE,
    SOURCE_USER,
    ConfigEntry,
    ConfigSubentry,
)
from homeassistant.const import CONF_API_KEY, CONF_LLM_HASS_API, CONF_NAME, CONF_PROMPT
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers import device_registry as dr, entity_registry as er, llm
import httpx
import openai
import probatio
import pytest
from pytest_homeassistant_custom_component import plugins

from custom_components.xiaozhi import async_remove_config_entry_device
from custom_components.xiaozhi.cloud import SpeechServiceError
from custom_components.xiaozhi.cloud.dashscope import REGION_URLS
from custom_components.xiaozhi.const import (
    CONF_BASE_URL,
    CONF_LANGUAGE,
    CONF_MAX_TOKENS,
    CONF_MEMORY,
    CONF_MODEL,
    CONF_PITCH,
    CONF_PRESET,
    CONF_RATE,
    CONF_REGION,
    CONF_SAVE_ANYWAY,
    CONF_SERVICE,
    CONF_TEMPERATURE,
    CONF_TIMEOUT,
    CONF_VOICE,
    CONF_VOLUME,
    DOMAIN,
    SUBENTRY_CONVERSATION,
    SUBENTRY_MCP_ENDPOINT,
    SUBENTRY_STT,
    SUBENTRY_TTS,
)
from custom_components.xiaozhi.diagnostics import async_get_config_entry_diagnostics
from custom_components.xiaozhi.service_check import CheckError, classify

from .cloud_servers import (
    DASHSCOPE_KEY,
    HOST,
    OPENAI_KEY,
    BlackHole,
    DashScopeServer,
    EdgeServer,
    OpenAiServer,
    closed_port,
)
from .llm_server import API_KEY, MODEL, LlmServer, Stall, async_start

pytestmark = pytest.mark.usefixtures("ota_url")  # the hub is set up


@pytest.fixture
def real_dns_for_invalid(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let names under .invalid (RFC 6761: they never resolve) reach the real resolver.

    HA's test harness refuses every name lookup with a RuntimeError of its own.
    """
    blocked = socket.getaddrinfo

    def getaddrinfo(host: str | bytes | None, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host or ""
        lookup = plugins._real_getaddrinfo if name.endswith(".invalid") else blocked
        return lookup(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture
async def llm_server(socket_enabled: None) -> AsyncIterator[LlmServer]:
    """The chat service the flows check the settings against."""
    server = LlmServer()
    runner = await async_start(server)
    yield server
    server.released.set()
    await runner.cleanup()


@pytest.fixture
async def openai_server(socket_enabled: None) -> AsyncIterator[OpenAiServer]:
    """The transcription service the STT flow checks the settings against."""
    server = await OpenAiServer().start()
    yield server
    await server.close()


def fields(result: Any) -> set[str]:
    return {str(key) for key in result["data_schema"].schema}


def hub(hass: HomeAssistant) -> ConfigEntry[Any]:
    return hass.config_entries.async_entries(DOMAIN)[0]


async def start(hass: HomeAssistant, subentry_type: str) -> Any:
    return await hass.config_entries.subentries.async_init(
        (hub(hass).entry_id, subentry_type), context={"source": SOURCE_USER}
    )


async def reconfigure(hass: HomeAssistant, subentry_id: str, subentry_type: str) -> Any:
    return await hass.config_entries.subentries.async_init(
        (hub(hass).entry_id, subentry_type),
        context={"source": SOURCE_RECONFIGURE, "subentry_id": subentry_id},
    )


async def configure(hass: HomeAssistant, result: Any, user_input: dict[str, Any]) -> Any:
    return await hass.config_entries.subentries.async_configure(result["flow_id"], user_input)


def suggested(result: Any, key: str) -> Any:
    for marker in result["data_schema"].schema:
        if marker == key:
            return (marker.description or {}).get("suggested_value")
    raise KeyError(key)


def agent_input(base_url: str, **changes: Any) -> dict[str, Any]:
    return {
        CONF_BASE_URL: base_url,
        CONF_API_KEY: API_KEY,
        CONF_MODEL: MODEL,
        CONF_PROMPT: "Be brief.",
        CONF_LLM_HASS_API: [llm.LLM_API_ASSIST],
        CONF_MEMORY: True,
        CONF_TEMPERATURE: 0.3,
        CONF_MAX_TOKENS: 300.0,
        CONF_TIMEOUT: 5.0,
        **changes,
    }


async def add_agent(hass: HomeAssistant, base_url: str, **changes: Any) -> str:
    result = await start(hass, SUBENTRY_CONVERSATION)
    result = await configure(hass, result, {CONF_PRESET: "custom"})
    result = await configure(hass, result, {CONF_NAME: "Agent", **agent_input(base_url, **changes)})
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    return find_subentry(hass, "Agent")


def find_subentry(hass: HomeAssistant, title: str) -> str:
    (found,) = (s.subentry_id for s in hub(hass).subentries.values() if s.title == title)
    return found


def entity_ids(hass: HomeAssistant, subentry_id: str) -> set[str]:
    return {
        entry.entity_id
        for entry in er.async_get(hass).entities.values()
        if entry.config_subentry_id == subentry_id
    }


async def test_conversation_flow_presets_validation_and_entry(
    hass: HomeAssistant, llm_server: LlmServer
) -> None:
    result = await start(hass, SUBENTRY_CONVERSATION)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "user"
    result = await configure(hass, result, {CONF_PRESET: "deepseek"})
    assert result["step_id"] == "settings"
    assert suggested(result, CONF_BASE_URL) == "https://api.deepseek.com/v1"
    assert suggested(result, CONF_MODEL) == "deepseek-chat"
    assert suggested(result, CONF_PROMPT) == llm.DEFAULT_INSTRUCTIONS_PROMPT

    # Each failure of the one-token check shows as a form error.
    form = {CONF_NAME: "DeepSeek", **agent_input(llm_server.url)}
    result = await configure(hass, result, {**form, CONF_API_KEY: "sk-wrong"})
    assert result["errors"] == {"base": "invalid_auth"}
    llm_server.script(Stall())
    result = await configure(hass, result, {**form, CONF_TIMEOUT: 0.3})
    assert result["errors"] == {"base": "timeout"}

    result = await configure(hass, result, form)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == "DeepSeek"
    assert result["data"] == {
        CONF_PRESET: "deepseek",
        **agent_input(llm_server.url),
        CONF_MAX_TOKENS: 300,
    }
    check = llm_server.requests[-1]
    assert check["model"] == MODEL
    assert check["max_tokens"] == 1


async def test_agent_form_tells_an_unreachable_service_from_a_wrong_address(
    hass: HomeAssistant, llm_server: LlmServer, real_dns_for_invalid: None
) -> None:
    result = await start(hass, SUBENTRY_CONVERSATION)
    result = await configure(hass, result, {CONF_PRESET: "custom"})
    form = {CONF_NAME: "Local", **agent_input(llm_server.url)}

    # Never reached: a name that does not resolve, or nothing listening on the port.
    for unreachable in ("http://nonexistent.invalid/v1", f"http://{HOST}:{closed_port()}/v1"):
        result = await configure(hass, result, {**form, CONF_BASE_URL: unreachable})
        assert result["errors"] == {"base": "cannot_reach"}, unreachable

    # Reached, but the address is wrong: the errors that say to check the base URL, as before.
    result = await configure(hass, result, {**form, CONF_BASE_URL: f"{llm_server.url}/wrong"})
    assert result["errors"] == {"base": "bad_request"}  # a 404 from the server
    tls_to_http = llm_server.url.replace("http://", "https://")
    result = await configure(hass, result, {**form, CONF_BASE_URL: tls_to_http})
    assert result["errors"] == {"base": "cannot_connect"}
    assert len(llm_server.requests) == 0

    result = await configure(hass, result, form)
    assert result["type"] is FlowResultType.CREATE_ENTRY


async def test_agent_entities_follow_their_subentry_without_reloading_the_hub(
    hass: HomeAssistant, llm_server: LlmServer, edge_server: EdgeServer
) -> None:
    entry = hub(hass)
    hub_runtime = entry.runtime_data
    subentry_id = await add_agent(hass, llm_server.url)
    button, agent = sorted(entity_ids(hass, subentry_id))
    assert button == "button.agent_forget_memory"
    assert agent == "conversation.agent"
    assert hass.states.get(agent) is not None
    assert hass.states.get(button) is not None
    device = dr.async_get(hass).async_get_device_by_identifier(
        (DOMAIN, subentry_id), entry.entry_id
    )
    assert device is not None
    assert device.name == "Agent"
    assert device.model == MODEL

    # Another type of service comes and goes without touching the agent.
    agent_entity = hass.data["entity_components"]["conversation"].get_entity(agent)
    result = await start(hass, SUBENTRY_TTS)
    result = await configure(hass, result, {CONF_SERVICE: "edge"})
    result = await configure(
        hass,
        result,
        {
            CONF_NAME: "Edge",
            CONF_VOICE: "zh-CN-XiaoxiaoNeural",
            CONF_RATE: 0,
            CONF_PITCH: 0,
            CONF_VOLUME: 0,
            CONF_TIMEOUT: 15.0,
        },
    )
    await hass.async_block_till_done()
    assert hass.data["entity_components"]["conversation"].get_entity(agent) is agent_entity

    # Reconfigure: memory off removes the button; the new settings are in use.
    result = await reconfigure(hass, subentry_id, SUBENTRY_CONVERSATION)
    assert result["step_id"] == "settings"
    assert suggested(result, CONF_MODEL) == MODEL
    changes = agent_input(llm_server.url, **{CONF_MEMORY: False, CONF_MODEL: "other-model"})
    del changes[CONF_PROMPT]  # emptied: the default instructions apply again
    result = await configure(hass, result, changes)
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    await hass.async_block_till_done()
    data = entry.subentries[subentry_id].data
    assert data[CONF_MODEL] == "other-model"
    assert CONF_PROMPT not in data
    (agent,) = entity_ids(hass, subentry_id)
    assert agent.startswith("conversation.")
    assert hass.states.get(button) is None
    llm_server.requests.clear()
    await hass.services.async_call(
        "conversation", "process", {"text": "hi", "agent_id": agent}, blocking=True
    )
    assert llm_server.requests[-1]["model"] == "other-model"

    # Removing the subentry removes the agent.
    assert hass.config_entries.async_remove_subentry(entry, subentry_id)
    await hass.async_block_till_done()
    assert hass.states.get(agent) is None
    assert entity_ids(hass, subentry_id) == set()
    assert entry.runtime_data is hub_runtime  # the hub (and every device channel) stayed up


async def test_stt_flows(
    hass: HomeAssistant, openai_server: OpenAiServer, dashscope: DashScopeServer
) -> None:
    result = await start(hass, SUBENTRY_STT)
    result = await configure(hass, result, {CONF_SERVICE: "openai"})
    assert result["step_id"] == "openai"
    assert suggested(result, CONF_MODEL) == "whisper-1"
    assert suggested(result, CONF_BASE_URL) == "https://api.openai.com/v1"
    whisper = {
        CONF_NAME: "Whisper",
        CONF_BASE_URL: openai_server.base_url,
        CONF_API_KEY: OPENAI_KEY,
        CONF_MODEL: "whisper-1",
        CONF_LANGUAGE: "zh",
        CONF_TIMEOUT: 10.0,
    }
    result = await configure(hass, result, whisper)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    del whisper[CONF_NAME]
    assert result["data"] == {CONF_SERVICE: "openai", **whisper}
    (check,) = openai_server.requests  # 0.5 s of silence, transcribed
    assert check["model"] == "whisper-1"
    assert check["language"] == "zh"
    assert len(check["file"]) == 44 + 16000

    result = await start(hass, SUBENTRY_STT)
    result = await configure(hass, result, {CONF_SERVICE: "dashscope"})
    assert result["step_id"] == "dashscope"
    assert suggested(result, CONF_MODEL) == "paraformer-realtime-v2"
    assert suggested(result, CONF_REGION) == "mainland"
    with patch.dict(REGION_URLS, {"mainland": dashscope.url}):
        result = await configure(
            hass,
            result,
            {
                CONF_NAME: "Paraformer",
                CONF_REGION: "mainland",
                CONF_API_KEY: DASHSCOPE_KEY,
                CONF_MODEL: "paraformer-realtime-v2",
                CONF_TIMEOUT: 15.0,
            },
        )
    assert result["data"] == {
        CONF_SERVICE: "dashscope",
        CONF_BASE_URL: dashscope.url,
        CONF_API_KEY: DASHSCOPE_KEY,
        CONF_MODEL: "paraformer-realtime-v2",
        CONF_TIMEOUT: 15.0,
    }
    assert dashscope.kinds() == ["run-task"]  # a task started and closed: no audio, no cost
    await hass.async_block_till_done()
    paraformer = find_subentry(hass, "Paraformer")

    # The international region: the key is checked there, and the URL follows the region.
    intl = f"{dashscope.url}?region=intl"
    with patch.dict(REGION_URLS, {"mainland": dashscope.url, "international": intl}):
        result = await reconfigure(hass, paraformer, SUBENTRY_STT)
        assert result["step_id"] == "dashscope"
        assert suggested(result, CONF_REGION) == "mainland"
        result = await configure(
            hass,
            result,
            {
                CONF_REGION: "international",
                CONF_API_KEY: DASHSCOPE_KEY,
                CONF_MODEL: "paraformer-v2",
                CONF_LANGUAGE: "en",
                CONF_TIMEOUT: 15.0,
            },
        )
        assert result["reason"] == "reconfigure_successful"
        await hass.async_block_till_done()
        data = hub(hass).subentries[paraformer].data
        assert data[CONF_BASE_URL] == intl
        assert data[CONF_LANGUAGE] == "en"
        result = await reconfigure(hass, paraformer, SUBENTRY_STT)
        assert suggested(result, CONF_REGION) == "international"

    # The service's device shows the model configured, not the default.
    device = dr.async_get(hass).async_get_device_by_identifier(
        (DOMAIN, paraformer), hub(hass).entry_id
    )
    assert device is not None
    assert device.model == "paraformer-v2"


async def test_an_existing_paraformer_url_keeps_working(hass: HomeAssistant) -> None:
    """Entries saved with a typed URL keep it; the form shows the URL's region."""
    entry = hub(hass)
    subentry = ConfigSubentry(
        data=MappingProxyType(
            {
                CONF_SERVICE: "dashscope",
                CONF_BASE_URL: "wss://dashscope-intl.aliyuncs.com/api-ws/v1/inference",
                CONF_API_KEY: "sk-old",
                CONF_MODEL: "paraformer-realtime-v2",
                CONF_TIMEOUT: 15.0,
            }
        ),
        subentry_type=SUBENTRY_STT,
        title="Old Paraformer",
        unique_id=None,
    )
    hass.config_entries.async_add_subentry(entry, subentry)
    await hass.async_block_till_done()
    assert hass.states.get("stt.old_paraformer") is not None
    result = await reconfigure(hass, subentry.subentry_id, SUBENTRY_STT)
    assert suggested(result, CONF_REGION) == "international"


async def test_a_dashscope_url_of_neither_region_is_kept_on_reconfigure(
    hass: HomeAssistant, dashscope: DashScopeServer
) -> None:
    """A proxy (here the loopback service) is the "custom" region, shown with its URL."""
    cosyvoice = {
        CONF_API_KEY: DASHSCOPE_KEY,
        CONF_MODEL: "cosyvoice-v2",
        CONF_VOICE: "longxiaochun_v2",
        CONF_TIMEOUT: 15.0,
    }
    result = await start(hass, SUBENTRY_TTS)
    result = await configure(hass, result, {CONF_SERVICE: "dashscope"})
    assert CONF_BASE_URL not in fields(result)  # a region is all most users choose

    # "Custom" chosen: the form comes back with the URL field, nothing checked yet.
    form = {CONF_NAME: "Proxied CosyVoice", **cosyvoice}
    result = await configure(hass, result, {**form, CONF_REGION: "custom"})
    assert result["step_id"] == "dashscope"
    assert result["errors"] == {}
    assert suggested(result, CONF_REGION) == "custom"
    assert CONF_BASE_URL in fields(result)
    assert dashscope.log == []
    custom = {**form, CONF_REGION: "custom"}
    result = await configure(hass, result, {**custom, CONF_BASE_URL: "https://proxy.example/"})
    assert result["errors"] == {CONF_BASE_URL: "invalid_url"}
    assert result["description_placeholders"] == {"schemes": "ws:// / wss://"}
    result = await configure(hass, result, {**custom, CONF_BASE_URL: f" {dashscope.url} "})
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"][CONF_BASE_URL] == dashscope.url
    assert dashscope.kinds() == ["run-task"]  # checked at that URL
    proxied = find_subentry(hass, "Proxied CosyVoice")

    # Reconfigured: the URL is shown and kept, and the check runs there again.
    result = await reconfigure(hass, proxied, SUBENTRY_TTS)
    assert suggested(result, CONF_REGION) == "custom"
    assert suggested(result, CONF_BASE_URL) == dashscope.url
    changed = {**cosyvoice, CONF_VOICE: "longwan_v2"}
    result = await configure(
        hass, result, {**changed, CONF_REGION: "custom", CONF_BASE_URL: dashscope.url}
    )
    assert result["reason"] == "reconfigure_successful"
    assert hub(hass).subentries[proxied].data[CONF_BASE_URL] == dashscope.url
    assert hub(hass).subentries[proxied].data[CONF_VOICE] == "longwan_v2"
    assert dashscope.kinds() == ["run-task", "run-task"]

    # Back to a region: its URL replaces the custom one (the URL field is ignored).
    mainland = f"{dashscope.url}?region=cn"
    with patch.dict(REGION_URLS, {"mainland": mainland}):
        result = await reconfigure(hass, proxied, SUBENTRY_TTS)
        result = await configure(
            hass, result, {**changed, CONF_REGION: "mainland", CONF_BASE_URL: dashscope.url}
        )
        assert result["reason"] == "reconfigure_successful"
        assert hub(hass).subentries[proxied].data[CONF_BASE_URL] == mainland
        result = await reconfigure(hass, proxied, SUBENTRY_TTS)
        assert suggested(result, CONF_REGION) == "mainland"
        assert CONF_BASE_URL not in fields(result)


WHISPER_FORM = {
    CONF_NAME: "Whisper",
    CONF_API_KEY: OPENAI_KEY,
    CONF_MODEL: "whisper-1",
    CONF_TIMEOUT: 5.0,
}


async def test_stt_check_failures_and_save_anyway(
    hass: HomeAssistant, openai_server: OpenAiServer, black_hole: BlackHole
) -> None:
    result = await start(hass, SUBENTRY_STT)
    result = await configure(hass, result, {CONF_SERVICE: "openai"})

    # A wrong key: refused, and no way to save it anyway.
    form = {**WHISPER_FORM, CONF_BASE_URL: openai_server.base_url}
    result = await configure(hass, result, {**form, CONF_API_KEY: "sk-wrong"})
    assert result["errors"] == {"base": "invalid_auth"}
    assert CONF_SAVE_ANYWAY not in fields(result)
    assert suggested(result, CONF_API_KEY) == "sk-wrong"  # what was typed stays in the form

    # Nothing listens: cannot reach, and the user may save anyway.
    refused = f"http://{HOST}:{closed_port()}/v1"
    result = await configure(hass, result, {**form, CONF_BASE_URL: refused})
    assert result["errors"] == {"base": "cannot_reach"}
    assert CONF_SAVE_ANYWAY in fields(result)

    # A service that never answers: timeout.
    hung = f"http://{HOST}:{black_hole.port}/v1"
    result = await configure(hass, result, {**form, CONF_BASE_URL: hung, CONF_TIMEOUT: 0.3})
    assert result["errors"] == {"base": "timeout"}

    # The service answers 500 to the test recording: the check may be wrong.
    openai_server.status = 500
    result = await configure(hass, result, form)
    assert result["errors"] == {"base": "unexpected"}
    assert CONF_SAVE_ANYWAY in fields(result)

    result = await configure(hass, result, {**form, CONF_BASE_URL: refused, CONF_SAVE_ANYWAY: True})
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"][CONF_BASE_URL] == refused
    assert CONF_SAVE_ANYWAY not in result["data"]


async def test_dashscope_checks_refuse_a_wrong_key_or_model(
    hass: HomeAssistant, dashscope: DashScopeServer
) -> None:
    form = {
        CONF_NAME: "CosyVoice",
        CONF_REGION: "mainland",
        CONF_API_KEY: DASHSCOPE_KEY,
        CONF_MODEL: "cosyvoice-v2",
        CONF_VOICE: "longxiaochun_v2",
        CONF_TIMEOUT: 5.0,
    }
    with patch.dict(REGION_URLS, {"mainland": dashscope.url}):
        result = await start(hass, SUBENTRY_TTS)
        result = await configure(hass, result, {CONF_SERVICE: "dashscope"})
        result = await configure(hass, result, {**form, CONF_API_KEY: "sk-wrong"})
        assert result["errors"] == {"base": "invalid_auth"}
        assert CONF_SAVE_ANYWAY not in fields(result)
        dashscope.fail_task = ("InvalidParameter", "voice not found")
        result = await configure(hass, result, form)
        assert result["errors"] == {"base": "rejected"}
        dashscope.fail_task = ("InvalidApiKey", "Invalid API-key provided.")
        result = await configure(hass, result, form)
        assert result["errors"] == {"base": "invalid_auth"}
        dashscope.fail_task = None
        result = await configure(hass, result, form)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"][CONF_BASE_URL] == dashscope.url
    run_task = dashscope.log[-1][1]
    assert run_task["parameters"]["voice"] == "longxiaochun_v2"


def test_a_name_that_does_not_resolve_is_not_blamed_on_the_address() -> None:
    dns = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    err = openai.APIConnectionError(request=httpx.Request("POST", "http://x"))
    err.__cause__ = dns
    assert classify(err) is CheckError.CANNOT_REACH
    unreachable = OSError(errno.ENETUNREACH, "Network is unreachable")
    assert classify(unreachable) is CheckError.CANNOT_REACH
    assert classify(ConnectionRefusedError()) is CheckError.CANNOT_REACH
    # Reached, but not a WebSocket service there: the address is wrong.
    not_the_service = aiohttp.WSServerHandshakeError(MagicMock(), (), status=200)
    wrapped = SpeechServiceError("handshake")
    wrapped.__cause__ = not_the_service
    assert classify(wrapped) is CheckError.CANNOT_CONNECT


async def test_tts_flows(
    hass: HomeAssistant, edge_server: EdgeServer, dashscope: DashScopeServer
) -> None:
    result = await start(hass, SUBENTRY_TTS)
    result = await configure(hass, result, {CONF_SERVICE: "edge"})
    assert result["step_id"] == "edge"
    assert suggested(result, CONF_VOICE) == "zh-CN-XiaoxiaoNeural"
    edge_form = {
        CONF_NAME: "Edge",
        CONF_VOICE: "en-US-EmmaMultilingualNeural",
        CONF_RATE: 10.0,
        CONF_PITCH: -5.0,
        CONF_VOLUME: 0.0,
        CONF_TIMEOUT: 15.0,
    }
    result = await configure(hass, result, {**edge_form, CONF_VOICE: "xx-XX-NobodyNeural"})
    assert result["errors"] == {CONF_VOICE: "unknown_voice"}
    assert CONF_SAVE_ANYWAY not in fields(result)
    result = await configure(hass, result, edge_form)
    assert result["data"] == {
        CONF_SERVICE: "edge",
        CONF_VOICE: "en-US-EmmaMultilingualNeural",
        CONF_RATE: 10,
        CONF_PITCH: -5,
        CONF_VOLUME: 0,
        CONF_TIMEOUT: 15.0,
    }
    assert isinstance(result["data"][CONF_RATE], int)
    assert edge_server.voice_list_requests >= 2
    edge_id = find_subentry(hass, "Edge")

    result = await start(hass, SUBENTRY_TTS)
    result = await configure(hass, result, {CONF_SERVICE: "dashscope"})
    assert suggested(result, CONF_MODEL) == "cosyvoice-v2"
    assert suggested(result, CONF_VOICE) == "longxiaochun_v2"
    with patch.dict(REGION_URLS, {"mainland": dashscope.url}):
        result = await configure(
            hass,
            result,
            {
                CONF_NAME: "CosyVoice",
                CONF_REGION: "mainland",
                CONF_API_KEY: DASHSCOPE_KEY,
                CONF_MODEL: "cosyvoice-v2",
                CONF_VOICE: "longxiaochun_v2",
                CONF_TIMEOUT: 15.0,
            },
        )
    assert result["data"][CONF_SERVICE] == "dashscope"
    assert result["data"][CONF_VOICE] == "longxiaochun_v2"

    result = await reconfigure(hass, edge_id, SUBENTRY_TTS)
    assert result["step_id"] == "edge"
    assert suggested(result, CONF_VOICE) == "en-US-EmmaMultilingualNeural"
    result = await configure(
        hass,
        result,
        {
            CONF_VOICE: "zh-CN-YunxiNeural",
            CONF_RATE: 0,
            CONF_PITCH: 0,
            CONF_VOLUME: 20,
            CONF_TIMEOUT: 15.0,
        },
    )
    assert result["reason"] == "reconfigure_successful"
    assert hub(hass).subentries[edge_id].data[CONF_VOICE] == "zh-CN-YunxiNeural"
    assert hub(hass).subentries[edge_id].title == "Edge"

    # The service's device cannot be deleted on its own: the subentry owns it.
    service = dr.async_get(hass).async_get_device_by_identifier(
        (DOMAIN, edge_id), hub(hass).entry_id
    )
    assert service is not None
    assert not await async_remove_config_entry_device(hass, hub(hass), service)


async def test_edge_offline_at_setup_can_be_saved_anyway(hass: HomeAssistant) -> None:
    with patch("edge_tts.voices.VOICE_LIST", f"http://{HOST}:{closed_port()}/voices/list"):
        result = await start(hass, SUBENTRY_TTS)
        result = await configure(hass, result, {CONF_SERVICE: "edge"})
        form = {
            CONF_NAME: "Edge",
            CONF_VOICE: "zh-CN-XiaoxiaoNeural",
            CONF_RATE: 0,
            CONF_PITCH: 0,
            CONF_VOLUME: 0,
            CONF_TIMEOUT: 5.0,
        }
        result = await configure(hass, result, form)
        assert result["errors"] == {"base": "cannot_reach"}
        result = await configure(hass, result, {**form, CONF_SAVE_ANYWAY: True})
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert CONF_SAVE_ANYWAY not in result["data"]


async def test_diagnostics_redact_api_keys(hass: HomeAssistant, llm_server: LlmServer) -> None:
    subentry_id = await add_agent(hass, llm_server.url)
    diagnostics = await async_get_config_entry_diagnostics(hass, hub(hass))
    subentry = diagnostics["subentries"][subentry_id]
    assert subentry["type"] == SUBENTRY_CONVERSATION
    assert subentry["data"][CONF_API_KEY] == "**REDACTED**"
    assert subentry["data"][CONF_MODEL] == MODEL
    assert API_KEY not in str(diagnostics)


async def test_agent_form_follows_the_preset_and_a_local_server_needs_no_key(
    hass: HomeAssistant,
) -> None:
    result = await start(hass, "conversation")
    result = await hass.config_entries.subentries.async_configure(
        result["flow_id"], {"preset": "deepseek"}
    )
    assert result["description_placeholders"] == {
        "base_url": "https://api.deepseek.com/v1",
        "model": "deepseek-chat",
    }
    assert _required(result, "api_key")
    result = await start(hass, "conversation")
    result = await hass.config_entries.subentries.async_configure(
        result["flow_id"], {"preset": "volcengine"}
    )
    assert result["description_placeholders"]["model"].startswith("ep-")
    result = await start(hass, "conversation")
    result = await hass.config_entries.subentries.async_configure(
        result["flow_id"], {"preset": "custom"}
    )
    assert not _required(result, "api_key")


async def test_defaults_follow_a_chinese_ha(hass: HomeAssistant) -> None:
    await hass.config.async_update(language="zh-Hans")
    result = await start(hass, "tts")
    result = await hass.config_entries.subentries.async_configure(
        result["flow_id"], {"service": "edge"}
    )
    assert _suggested(result, "name") == "Edge 语音合成"
    result = await start(hass, "conversation")
    result = await hass.config_entries.subentries.async_configure(
        result["flow_id"], {"preset": "bailian"}
    )
    assert "语音助手" in _suggested(result, "prompt")


def _field(result: Any, name: str) -> Any:
    return next(key for key in result["data_schema"].schema if str(key) == name)


def _required(result: Any, name: str) -> bool:
    return isinstance(_field(result, name), probatio.Required)


def _suggested(result: Any, name: str) -> Any:
    key = _field(result, name)
    if key.description and "suggested_value" in key.description:
        return key.description["suggested_value"]
    return key.default()


async def test_no_service_is_added_or_changed_while_the_hub_is_not_loaded(
    hass: HomeAssistant, llm_server: LlmServer
) -> None:
    subentry_id = await add_agent(hass, llm_server.url)
    assert await hass.config_entries.async_unload(hub(hass).entry_id)
    for subentry_type in (SUBENTRY_CONVERSATION, SUBENTRY_STT, SUBENTRY_TTS, SUBENTRY_MCP_ENDPOINT):
        result = await start(hass, subentry_type)
        assert result["type"] is FlowResultType.ABORT
        assert result["reason"] == "entry_not_loaded"
    result = await reconfigure(hass, subentry_id, SUBENTRY_CONVERSATION)
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "entry_not_loaded"


async def test_an_empty_edge_voice_list_may_be_saved_anyway(
    hass: HomeAssistant, edge_server: EdgeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tests.cloud_servers.EDGE_VOICES", [])
    result = await start(hass, SUBENTRY_TTS)
    result = await configure(hass, result, {CONF_SERVICE: "edge"})
    form = {
        CONF_NAME: "Edge",
        CONF_VOICE: "zh-CN-XiaoxiaoNeural",
        CONF_RATE: 0,
        CONF_PITCH: 0,
        CONF_VOLUME: 0,
        CONF_TIMEOUT: 5.0,
    }
    result = await configure(hass, result, form)
    assert result["errors"] == {"base": "unexpected"}
    assert CONF_SAVE_ANYWAY in fields(result)
    assert edge_server.voice_list_requests == 1
