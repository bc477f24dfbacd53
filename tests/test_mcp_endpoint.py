"""MCP endpoints: HA connects out to a (loopback) xiaozhi MCP endpoint and serves Assist there."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
import json
import logging
from typing import Any

from homeassistant.components.homeassistant.exposed_entities import async_expose_entity
from homeassistant.components.light import ColorMode, LightEntity
from homeassistant.config_entries import ConfigEntry, ConfigFlow, ConfigSubentryData
from homeassistant.const import CONF_LLM_HASS_API, CONF_URL, STATE_OFF, STATE_ON, Platform
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er, issue_registry as ir, llm
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.setup import async_setup_component
import probatio
import pytest
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    MockModule,
    MockPlatform,
    mock_config_flow,
    mock_integration,
    mock_platform,
)

from custom_components.xiaozhi.const import DOMAIN, SUBENTRY_MCP_ENDPOINT
from custom_components.xiaozhi.diagnostics import async_get_config_entry_diagnostics
from custom_components.xiaozhi.mcp_endpoint import async_get_endpoint
from custom_components.xiaozhi.mcp_link import LIMITS, LinkState
from custom_components.xiaozhi.mcp_link.link import BACKOFF_BASE_S, REFUSED_RETRY_S
from custom_components.xiaozhi.redact import UrlCredentialsFilter

from .mcp_endpoint_server import LoopbackEndpoint

LIGHTS_DOMAIN = "xiaozhi_test_lights"
TURN_ON = "intent__HassTurnOn"  # HA 2026.9+ prefixes tool names with their integration
LIVE_CONTEXT = "homeassistant__GetLiveContext"


class LightsFlow(ConfigFlow):
    """The test lights' (empty) config flow."""


@pytest.fixture(autouse=True)
def _lights_flow() -> Any:
    """Let the test lights' config entry load."""
    with mock_config_flow(LIGHTS_DOMAIN, LightsFlow):
        yield


class Light(LightEntity):
    """An on/off light."""

    _attr_color_mode = ColorMode.ONOFF
    _attr_supported_color_modes = {ColorMode.ONOFF}  # noqa: RUF012
    _attr_is_on = False

    def __init__(self, name: str) -> None:
        self._attr_name = name
        self._attr_unique_id = name.lower().replace(" ", "-")

    async def async_turn_on(self, **kwargs: Any) -> None:
        self._attr_is_on = True
        self.async_write_ha_state()

    async def async_turn_off(self, **kwargs: Any) -> None:
        self._attr_is_on = False
        self.async_write_ha_state()


async def async_setup_lights(hass: HomeAssistant, names: list[str]) -> list[Light]:
    """Real light entities (in the real light component) with these names."""
    lights = [Light(name) for name in names]

    async def setup_entry(hass: HomeAssistant, entry: ConfigEntry) -> bool:
        await hass.config_entries.async_forward_entry_setups(entry, [Platform.LIGHT])
        return True

    async def setup_platform(
        hass: HomeAssistant, entry: ConfigEntry, add: AddConfigEntryEntitiesCallback
    ) -> None:
        add(lights)

    mock_integration(hass, MockModule(LIGHTS_DOMAIN, async_setup_entry=setup_entry))
    mock_platform(hass, f"{LIGHTS_DOMAIN}.config_flow")
    mock_platform(hass, f"{LIGHTS_DOMAIN}.light", MockPlatform(async_setup_entry=setup_platform))
    for component in ("intent", "conversation", "light"):
        assert await async_setup_component(hass, component, {})
    entry = MockConfigEntry(domain=LIGHTS_DOMAIN)
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    return lights


class EchoTool(llm.Tool):
    """A tool of the test API."""

    parameters = probatio.Schema({probatio.Required("text"): str})

    def __init__(self, name: str, description: str = "Echo the text.") -> None:
        self.name = name
        self.description = description

    async def async_call(
        self, hass: HomeAssistant, tool_input: llm.ToolInput, llm_context: llm.LLMContext
    ) -> llm.ToolResult:
        return llm.ToolResult({"echo": tool_input.tool_args["text"]})


class ToolsApi(llm.API):
    """An LLM API of its own, with the tools given."""

    def __init__(self, hass: HomeAssistant, api_id: str, tools: list[llm.Tool]) -> None:
        super().__init__(hass=hass, id=api_id, name=api_id)
        self.tools = tools

    async def async_get_api_instance(self, llm_context: llm.LLMContext) -> llm.APIInstance:
        return llm.APIInstance(self, "", llm_context, self.tools)


def endpoint_subentry(url: str, apis: list[str] | None = None, title: str = "xiaozhi.me") -> Any:
    """The subentry data of an endpoint."""
    return ConfigSubentryData(
        data={CONF_URL: url, CONF_LLM_HASS_API: apis or [llm.LLM_API_ASSIST]},
        subentry_type=SUBENTRY_MCP_ENDPOINT,
        title=title,
        unique_id=None,
    )


@pytest.fixture
async def endpoint(socket_enabled: None) -> AsyncIterator[LoopbackEndpoint]:
    """An MCP endpoint on loopback."""
    server = await LoopbackEndpoint().start()
    yield server
    await server.close()


@pytest.fixture
async def start_hub(hass: HomeAssistant, ha_core: None) -> AsyncIterator[Callable[..., Any]]:
    """Return a function setting the hub up with these subentries; unloads it after."""
    entries: list[MockConfigEntry] = []

    async def _start(*subentries: Any) -> MockConfigEntry:
        entry = MockConfigEntry(
            domain=DOMAIN, title="Xiaozhi", data={}, subentries_data=list(subentries)
        )
        entry.add_to_hass(hass)
        assert await hass.config_entries.async_setup(entry.entry_id)
        await hass.async_block_till_done()
        entries.append(entry)
        return entry

    yield _start
    for entry in entries:
        await hass.config_entries.async_unload(entry.entry_id)


def sensor_state(hass: HomeAssistant, entry: MockConfigEntry, subentry_id: str) -> str:
    """The state of an endpoint's connectivity sensor."""
    entity_id = er.async_get(hass).async_get_entity_id("binary_sensor", DOMAIN, subentry_id)
    assert entity_id is not None
    state = hass.states.get(entity_id)
    assert state is not None
    return state.state


def only_subentry(entry: MockConfigEntry) -> str:
    """The id of the entry's one subentry."""
    (subentry_id,) = entry.subentries
    return subentry_id


def text_of(result: Any) -> str:
    """The text of a tools/call result (one block)."""
    assert len(result.content) == 1
    return str(result.content[0].text)


async def until(condition: Callable[[], bool], timeout: float = 5) -> None:
    """Poll state that other tasks write (the link's, the sensor's)."""
    async with asyncio.timeout(timeout):
        while True:
            if condition():
                return
            await asyncio.sleep(0.01)


async def test_assist_over_the_endpoint_controls_exposed_entities_only(
    hass: HomeAssistant, endpoint: LoopbackEndpoint, start_hub: Callable[..., Any]
) -> None:
    """The endpoint lists Assist's tools, turns a light on; an unexposed one stays out of reach."""
    kitchen, secret = await async_setup_lights(hass, ["Kitchen Light", "Secret Lamp"])
    async_expose_entity(hass, "conversation", kitchen.entity_id, True)
    async_expose_entity(hass, "conversation", secret.entity_id, False)
    entry = await start_hub(endpoint_subentry(endpoint.url))
    connection = await endpoint.next_connection()

    tools = {tool.name: tool for tool in (await connection.session.list_tools()).tools}
    assert {TURN_ON, LIVE_CONTEXT} <= tools.keys()
    result = await connection.session.call_tool(TURN_ON, {"name": "Kitchen Light"})
    assert not result.isError, text_of(result)
    await hass.async_block_till_done()
    assert hass.states.get(kitchen.entity_id).state == STATE_ON  # type: ignore[union-attr]

    context = text_of(await connection.session.call_tool(LIVE_CONTEXT, {}))
    assert "Kitchen Light" in context
    assert "Secret Lamp" not in context
    refused = await connection.session.call_tool(TURN_ON, {"name": "Secret Lamp"})
    assert refused.isError
    await hass.async_block_till_done()
    assert hass.states.get(secret.entity_id).state == STATE_OFF  # type: ignore[union-attr]

    subentry_id = only_subentry(entry)
    assert sensor_state(hass, entry, subentry_id) == STATE_ON
    service = async_get_endpoint(hass, entry, subentry_id)
    assert service is not None
    assert service.link.stats.calls == 3
    assert service.link.stats.failed_calls == 1
    assert service.link.stats.tools_served == len(tools)


async def test_a_dropped_socket_is_reconnected_within_the_backoff(
    hass: HomeAssistant, endpoint: LoopbackEndpoint, start_hub: Callable[..., Any]
) -> None:
    """The endpoint drops the socket: the sensor goes off, HA is back within the first backoff."""
    (kitchen,) = await async_setup_lights(hass, ["Kitchen Light"])
    async_expose_entity(hass, "conversation", kitchen.entity_id, True)
    entry = await start_hub(endpoint_subentry(endpoint.url))
    subentry_id = only_subentry(entry)
    first = await endpoint.next_connection()
    assert sensor_state(hass, entry, subentry_id) == STATE_ON

    await first.drop()
    await until(lambda: sensor_state(hass, entry, subentry_id) == STATE_OFF)
    dropped_at = asyncio.get_running_loop().time()
    second = await endpoint.next_connection(timeout=BACKOFF_BASE_S + 2)
    assert asyncio.get_running_loop().time() - dropped_at <= BACKOFF_BASE_S + 1
    result = await second.session.call_tool(TURN_ON, {"name": "Kitchen Light"})
    assert not result.isError, text_of(result)
    await hass.async_block_till_done()
    assert hass.states.get(kitchen.entity_id).state == STATE_ON  # type: ignore[union-attr]
    await until(lambda: sensor_state(hass, entry, subentry_id) == STATE_ON)
    service = async_get_endpoint(hass, entry, subentry_id)
    assert service is not None
    assert service.link.stats.connections == 2
    assert service.link.stats.last_error == "the endpoint closed the connection"


@pytest.mark.parametrize(
    "refuse",
    [
        pytest.param({"refuse_status": 401}, id="cloud-401"),
        pytest.param({"close_code_on_connect": 1008}, id="self-hosted-close-1008"),
    ],
)
async def test_a_refused_token_raises_a_repair_and_stops_retrying_fast(
    hass: HomeAssistant,
    endpoint: LoopbackEndpoint,
    start_hub: Callable[..., Any],
    refuse: dict[str, int],
) -> None:
    """A refused token: one attempt, a Repairs issue, the sensor off; a new URL fixes it."""
    for key, value in refuse.items():
        setattr(endpoint, key, value)
    entry = await start_hub(endpoint_subentry(endpoint.url))
    subentry_id = only_subentry(entry)
    issue_id = f"endpoint_refused_{subentry_id}"
    registry = ir.async_get(hass)
    await until(lambda: registry.async_get_issue(DOMAIN, issue_id) is not None)
    await asyncio.sleep(3 * BACKOFF_BASE_S)  # a fast retry loop would have tried again by now
    assert endpoint.attempts == 1
    assert sensor_state(hass, entry, subentry_id) == STATE_OFF
    service = async_get_endpoint(hass, entry, subentry_id)
    assert service is not None
    assert service.link.stats.state is LinkState.REFUSED
    assert service.link.stats.retry_in_s == REFUSED_RETRY_S

    # The user enters the endpoint's current URL (here: the endpoint accepts it again).
    for key in refuse:
        setattr(endpoint, key, None)
    subentry = entry.subentries[subentry_id]
    hass.config_entries.async_update_subentry(
        entry, subentry, data={**subentry.data, CONF_URL: f"{endpoint.url}&v=2"}
    )
    await hass.async_block_till_done()
    connection = await endpoint.next_connection()
    await connection.session.list_tools()
    await until(lambda: registry.async_get_issue(DOMAIN, issue_id) is None)
    assert sensor_state(hass, entry, subentry_id) == STATE_ON


async def test_200_exposed_entities_stay_within_the_limits(
    hass: HomeAssistant, endpoint: LoopbackEndpoint, start_hub: Callable[..., Any]
) -> None:
    """200 exposed lights: tools/list stays within the limits, a call works, context is cut."""
    lights = await async_setup_lights(hass, [f"Light {n:03d}" for n in range(200)])
    for light in lights:
        async_expose_entity(hass, "conversation", light.entity_id, True)
    entry = await start_hub(endpoint_subentry(endpoint.url))
    connection = await endpoint.next_connection()

    tools = (await connection.session.list_tools()).tools
    listed = next(m for m in connection.sent if "tools" in m.get("result", {}))
    list_chars = len(json.dumps(listed["result"]["tools"], ensure_ascii=False))
    assert len(tools) <= LIMITS.max_tools
    assert list_chars <= LIMITS.max_tools_list_chars
    result = await connection.session.call_tool(TURN_ON, {"name": "Light 137"})
    assert not result.isError, text_of(result)
    await hass.async_block_till_done()
    assert hass.states.get(lights[137].entity_id).state == STATE_ON  # type: ignore[union-attr]
    context = text_of(await connection.session.call_tool(LIVE_CONTEXT, {}))
    assert len(context) <= LIMITS.max_result_chars
    assert "Light 000" in context
    assert "Light 199" in context  # whole: 200 lights' context is within the result limit
    service = async_get_endpoint(hass, entry, only_subentry(entry))
    assert service is not None
    issue_id = f"endpoint_over_limit_{service.subentry.subentry_id}"
    assert ir.async_get(hass).async_get_issue(DOMAIN, issue_id) is None
    print(  # the numbers the README quotes (pytest -s)
        f"200 exposed lights: {len(tools)} tools, tools/list {list_chars} chars; "
        f"GetLiveContext {len(context)} chars"
    )


async def test_two_endpoints_serve_their_own_apis_and_one_can_go(
    hass: HomeAssistant, start_hub: Callable[..., Any], socket_enabled: None
) -> None:
    """Two endpoints, each with its APIs; removing one closes it at once, the other stays."""
    (kitchen,) = await async_setup_lights(hass, ["Kitchen Light"])
    async_expose_entity(hass, "conversation", kitchen.entity_id, True)
    unregister = llm.async_register_api(hass, ToolsApi(hass, "echo", [EchoTool("Echo")]))
    cloud, own = LoopbackEndpoint(), LoopbackEndpoint(token="self-hosted")
    await cloud.start()
    await own.start()
    try:
        entry = await start_hub(
            endpoint_subentry(cloud.url, title="xiaozhi.me"),
            endpoint_subentry(own.url, ["echo"], title="My server"),
        )
        on_cloud, on_own = await cloud.next_connection(), await own.next_connection()
        assert TURN_ON in {tool.name for tool in (await on_cloud.session.list_tools()).tools}
        assert [tool.name for tool in (await on_own.session.list_tools()).tools] == ["Echo"]
        echoed = await on_own.session.call_tool("Echo", {"text": "你好"})
        assert json.loads(text_of(echoed)) == {"echo": "你好"}

        cloud_id = next(i for i, s in entry.subentries.items() if s.title == "xiaozhi.me")
        own_id = next(i for i, s in entry.subentries.items() if s.title == "My server")
        assert hass.config_entries.async_remove_subentry(entry, cloud_id)
        await hass.async_block_till_done()
        await until(lambda: on_cloud.closed, timeout=1)
        assert async_get_endpoint(hass, entry, cloud_id) is None
        assert not on_own.closed
        assert sensor_state(hass, entry, own_id) == STATE_ON
        echoed = await on_own.session.call_tool("Echo", {"text": "still here"})
        assert json.loads(text_of(echoed)) == {"echo": "still here"}
        await asyncio.sleep(2 * BACKOFF_BASE_S)
        assert cloud.attempts == 1  # the removed endpoint is not dialled again
    finally:
        unregister()
        await cloud.close()
        await own.close()


async def test_a_selection_over_the_limits_is_cut_and_named_in_repairs(
    hass: HomeAssistant, endpoint: LoopbackEndpoint, start_hub: Callable[..., Any]
) -> None:
    """Too many tools, a name the endpoint cannot take, a huge result: cut, never dropped."""
    tools: list[llm.Tool] = [EchoTool(f"Tool{n:02d}") for n in range(LIMITS.max_tools + 6)]
    tools.insert(0, EchoTool("self.camera.take_photo"))  # dots: not an LLM function name
    tools.insert(1, EchoTool("Wordy", "x" * (LIMITS.max_description_chars * 3)))
    unregister = llm.async_register_api(hass, ToolsApi(hass, "many", tools))
    try:
        entry = await start_hub(endpoint_subentry(endpoint.url, ["many"]))
        connection = await endpoint.next_connection()
        listed = (await connection.session.list_tools()).tools
        names = [tool.name for tool in listed]
        assert len(listed) == LIMITS.max_tools
        assert names[:2] == ["Wordy", "Tool00"]  # in the APIs' order, the bad name left out
        assert len(listed[0].description or "") == LIMITS.max_description_chars

        subentry_id = only_subentry(entry)
        issue = ir.async_get(hass).async_get_issue(DOMAIN, f"endpoint_over_limit_{subentry_id}")
        assert issue is not None
        placeholders = issue.translation_placeholders or {}
        assert placeholders["offered"] == str(len(tools))
        assert placeholders["served"] == str(LIMITS.max_tools)
        assert placeholders["dropped"].startswith("self.camera.take_photo, Tool23")

        big = "长" * (LIMITS.max_result_chars * 2)
        result = await connection.session.call_tool("Tool00", {"text": big})
        text = text_of(result)
        assert len(text) <= LIMITS.max_result_chars
        assert text.endswith(
            f"{len(json.dumps({'echo': big}, ensure_ascii=False))} characters shown]"
        )
        service = async_get_endpoint(hass, entry, subentry_id)
        assert service is not None
        assert service.link.stats.results_cut == 1
    finally:
        unregister()


async def test_the_flow_adds_an_endpoint_serving_assist_by_default(
    hass: HomeAssistant, endpoint: LoopbackEndpoint, start_hub: Callable[..., Any]
) -> None:
    """⋮ → Add MCP endpoint: the URL is checked, Assist is preselected, the link comes up."""
    entry = await start_hub()
    result = await hass.config_entries.subentries.async_init(
        (entry.entry_id, SUBENTRY_MCP_ENDPOINT), context={"source": "user"}
    )
    assert result["type"] == "form"
    schema = result["data_schema"].schema
    suggested = {str(key): key.description for key in schema}
    assert suggested[CONF_LLM_HASS_API] == {"suggested_value": [llm.LLM_API_ASSIST]}
    bad = await hass.config_entries.subentries.async_configure(
        result["flow_id"],
        {"name": "Cloud", CONF_URL: "https://api.xiaozhi.me/mcp/", CONF_LLM_HASS_API: ["assist"]},
    )
    assert bad["errors"] == {CONF_URL: "invalid_url"}
    done = await hass.config_entries.subentries.async_configure(
        result["flow_id"],
        {"name": "Cloud", CONF_URL: f" {endpoint.url} ", CONF_LLM_HASS_API: ["assist"]},
    )
    assert done["type"] == "create_entry"
    await hass.async_block_till_done()
    subentry_id = only_subentry(entry)
    assert entry.subentries[subentry_id].data[CONF_URL] == endpoint.url
    await endpoint.next_connection()
    await until(lambda: sensor_state(hass, entry, subentry_id) == STATE_ON)


async def test_an_endpoint_needs_an_llm_api_and_can_be_reconfigured(
    hass: HomeAssistant, endpoint: LoopbackEndpoint, start_hub: Callable[..., Any]
) -> None:
    """At least one LLM API is served; Reconfigure changes the URL and APIs, and reconnects."""
    entry = await start_hub()
    result = await hass.config_entries.subentries.async_init(
        (entry.entry_id, SUBENTRY_MCP_ENDPOINT), context={"source": "user"}
    )
    result = await hass.config_entries.subentries.async_configure(
        result["flow_id"], {"name": "Cloud", CONF_URL: endpoint.url, CONF_LLM_HASS_API: []}
    )
    assert result["errors"] == {CONF_LLM_HASS_API: "no_llm_api"}
    result = await hass.config_entries.subentries.async_configure(
        result["flow_id"], {"name": "Cloud", CONF_URL: endpoint.url, CONF_LLM_HASS_API: ["assist"]}
    )
    assert result["type"] == "create_entry"
    await hass.async_block_till_done()
    subentry_id = only_subentry(entry)
    await endpoint.next_connection()

    result = await hass.config_entries.subentries.async_init(
        (entry.entry_id, SUBENTRY_MCP_ENDPOINT),
        context={"source": "reconfigure", "subentry_id": subentry_id},
    )
    assert result["step_id"] == "user"
    assert CONF_URL in {str(key) for key in result["data_schema"].schema}
    assert "name" not in {str(key) for key in result["data_schema"].schema}
    moved = f"{endpoint.url}&agent=2"
    result = await hass.config_entries.subentries.async_configure(
        result["flow_id"], {CONF_URL: moved, CONF_LLM_HASS_API: ["assist"]}
    )
    assert result["reason"] == "reconfigure_successful"
    await hass.async_block_till_done()
    assert entry.subentries[subentry_id].data[CONF_URL] == moved
    assert entry.subentries[subentry_id].title == "Cloud"
    service = async_get_endpoint(hass, entry, subentry_id)
    assert service is not None
    assert service.settings[0][CONF_URL] == moved  # a new link, to the new URL
    await endpoint.next_connection()
    await until(lambda: sensor_state(hass, entry, subentry_id) == STATE_ON)


async def test_diagnostics_show_the_link_without_the_token(
    hass: HomeAssistant, endpoint: LoopbackEndpoint, start_hub: Callable[..., Any]
) -> None:
    """Diagnostics: state, connected since, tools served, calls made; the token redacted."""
    entry = await start_hub(endpoint_subentry(endpoint.url))
    connection = await endpoint.next_connection()
    await connection.session.list_tools()
    await connection.session.call_tool(LIVE_CONTEXT, {})
    diagnostics = await async_get_config_entry_diagnostics(hass, entry)
    text = json.dumps(diagnostics)
    assert endpoint.token not in text
    assert "token=**REDACTED**" in text
    (link,) = diagnostics["mcp_endpoints"].values()
    assert link["state"] == "connected"
    assert link["connected_since"] is not None
    assert link["calls"] == 1
    assert link["tools_served"] == link["tools_offered"] > 0


def test_endpoint_tokens_are_redacted_from_log_lines() -> None:
    """A log line quoting an endpoint URL loses its token (cloud and self-hosted forms)."""
    record = logging.LogRecord(
        "custom_components.xiaozhi.mcp_link.link",
        logging.WARNING,
        __file__,
        1,
        "cannot reach %s or %s",
        (
            "wss://api.xiaozhi.me/mcp/?token=eyJhbGci.J9.x-Y_z",
            "ws://h:8004/mcp_endpoint/mcp/?token=rIRq%3D",
        ),
        None,
    )
    assert UrlCredentialsFilter().filter(record)
    assert record.getMessage() == (
        "cannot reach wss://api.xiaozhi.me/mcp/?token=**REDACTED** or "
        "ws://h:8004/mcp_endpoint/mcp/?token=**REDACTED**"
    )
