"""The device's own tools in HA: MCP over the emulator's channel, entities, restarts, bad input."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
import logging
from typing import Any

from homeassistant.components import conversation
from homeassistant.const import STATE_OFF, STATE_ON, STATE_UNAVAILABLE
from homeassistant.core import Context, HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import (
    area_registry as ar,
    device_registry as dr,
    entity_registry as er,
    intent,
)
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.xiaozhi.const import DOMAIN
from custom_components.xiaozhi.core import mcp
from custom_components.xiaozhi.core.messages import ListenMode
from tools.emulator import DeviceEmulator

from .conftest import make_hub_entry
from .providers import Providers
from .test_assist_satellite import speak

type MakeDevice = Callable[..., Coroutine[Any, Any, DeviceEmulator]]
SMALL_PAGE_BYTES = 900  # the emulator's tools then span 4 pages
SLOW_TIMEOUT_S = 0.3
DEVICE_ID = "02:00:00:00:ab:cd"  # see README: a name ending in digits is not matched


@pytest.fixture
def hub_entry(providers: Providers) -> MockConfigEntry:
    """The hub, set up after the providers."""
    return make_hub_entry()


def entity_id(hass: HomeAssistant, platform: str, device: DeviceEmulator, key: str) -> str:
    found = er.async_get(hass).async_get_entity_id(platform, DOMAIN, f"{device.device_id}-{key}")
    assert found is not None, f"no {platform} {key}"
    return found


async def wait_for(hass: HomeAssistant, check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Let HA and the emulator work until `check()` holds."""
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)
            await hass.async_block_till_done()


def state(hass: HomeAssistant, entity: str) -> str:
    current = hass.states.get(entity)
    return current.state if current else "missing"


async def connected_device(
    hass: HomeAssistant, make_device: MakeDevice, **kwargs: Any
) -> DeviceEmulator:
    """A device whose tools are listed and status read (entities made and available)."""
    device = await make_device(**kwargs)
    device.mcp.page_bytes = SMALL_PAGE_BYTES
    await device.connect()
    await wait_for(
        hass, lambda: any(name == "self.get_device_status" for name, _ in device.mcp.calls)
    )
    await wait_for(
        hass,
        lambda: er.async_get(hass).async_get_entity_id(
            "sensor", DOMAIN, f"{device.device_id}-battery_level"
        )
        is not None
        and state(hass, entity_id(hass, "sensor", device, "battery_level")) == "76",
    )
    return device


async def test_tools_become_entities_and_calls(
    hass: HomeAssistant, make_device: MakeDevice
) -> None:
    device = await connected_device(hass, make_device)

    # initialize carried the camera's upload URL and a token; the list came in pages.
    initialize = device.mcp.requests[0]
    assert initialize["method"] == "initialize"
    vision = initialize["params"]["capabilities"]["vision"]
    assert vision["url"].endswith("/xiaozhi/vision") and len(vision["token"]) > 20
    pages = [r for r in device.mcp.requests if r["method"] == "tools/list"]
    assert len(pages) >= 3
    assert all(page["params"]["withUserTools"] is True for page in pages)
    assert "cursor" not in pages[0]["params"]
    names = [t.name for t in device.mcp.tools]
    assert all(page["params"]["cursor"] in names for page in pages[1:])
    assert all(isinstance(r["id"], int) for r in device.mcp.requests)

    speaker = entity_id(hass, "media_player", device, "speaker")
    assert state(hass, speaker) == STATE_ON
    assert hass.states.get(speaker).attributes["volume_level"] == 0.7
    brightness = entity_id(hass, "number", device, "screen_brightness")
    assert state(hass, brightness) == "80.0"
    assert state(hass, entity_id(hass, "select", device, "screen_theme")) == "light"
    assert state(hass, entity_id(hass, "sensor", device, "wifi_signal")) == "strong"
    assert state(hass, entity_id(hass, "sensor", device, "chip_temperature")) == "41.5"
    assert state(hass, entity_id(hass, "binary_sensor", device, "battery_charging")) == STATE_OFF
    assert state(hass, entity_id(hass, "button", device, "reboot")) != STATE_UNAVAILABLE
    entity_id(hass, "image", device, "last_photo")

    await hass.services.async_call(
        "media_player", "volume_set", {"entity_id": speaker, "volume_level": 0.3}, blocking=True
    )
    assert ("self.audio_speaker.set_volume", {"volume": 30}) in device.mcp.calls
    assert device.mcp.volume == 30
    assert hass.states.get(speaker).attributes["volume_level"] == 0.3

    await hass.services.async_call(
        "number", "set_value", {"entity_id": brightness, "value": 42}, blocking=True
    )
    assert ("self.screen.set_brightness", {"brightness": 42}) in device.mcp.calls
    assert device.mcp.brightness == 42

    await hass.services.async_call(
        "select",
        "select_option",
        {"entity_id": entity_id(hass, "select", device, "screen_theme"), "option": "dark"},
        blocking=True,
    )
    assert device.mcp.theme == "dark"
    await hass.services.async_call(
        "button", "press", {"entity_id": entity_id(hass, "button", device, "reboot")}, blocking=True
    )
    assert device.mcp.rebooted == 1

    # A value changed on the device shows after the next call's status refresh.
    device.mcp.charging = True
    await hass.services.async_call(
        "media_player", "volume_up", {"entity_id": speaker}, blocking=True
    )
    await wait_for(
        hass,
        lambda: state(hass, entity_id(hass, "binary_sensor", device, "battery_charging"))
        == STATE_ON,
    )
    assert device.mcp.volume == 40


async def test_builtin_agent_sets_the_volume(
    hass: HomeAssistant, providers: Providers, make_device: MakeDevice
) -> None:
    """HA's own intents act on the media player, as for ESPHome voice satellites."""
    device = await connected_device(hass, make_device, device_id=DEVICE_ID)
    speaker = entity_id(hass, "media_player", device, "speaker")
    name = hass.states.get(speaker).attributes["friendly_name"]
    result = await conversation.async_converse(
        hass, f"set the volume of {name} to 25", None, Context(), language="en"
    )
    assert result.response.response_type is intent.IntentResponseType.ACTION_DONE
    await wait_for(hass, lambda: device.mcp.volume == 25)

    # In the device's area, "the volume" is the device's own (the sentence the demo says).
    study = ar.async_get(hass).async_create("Study")
    entry = er.async_get(hass).async_get(speaker)
    assert entry is not None and entry.device_id is not None
    dr.async_get(hass).async_update_device(entry.device_id, area_id=study.id)
    result = await conversation.async_converse(
        hass, "set the volume to 30", None, Context(), language="en", device_id=entry.device_id
    )
    assert result.response.response_type is intent.IntentResponseType.ACTION_DONE
    await wait_for(hass, lambda: device.mcp.volume == 30)


async def test_tool_error_and_timeout_are_clear_and_the_session_goes_on(
    hass: HomeAssistant,
    providers: Providers,
    make_device: MakeDevice,
    monkeypatch: pytest.MonkeyPatch,
    speech: bytes,
) -> None:
    device = await connected_device(hass, make_device)
    speaker = entity_id(hass, "media_player", device, "speaker")

    device.mcp.fail["self.audio_speaker.set_volume"] = "Audio codec busy"
    with pytest.raises(HomeAssistantError, match="Audio codec busy") as failed:
        await hass.services.async_call(
            "media_player", "volume_set", {"entity_id": speaker, "volume_level": 0.5}, blocking=True
        )
    assert failed.value.translation_key == "tool_failed"
    del device.mcp.fail["self.audio_speaker.set_volume"]

    monkeypatch.setattr(mcp, "REQUEST_TIMEOUT_S", SLOW_TIMEOUT_S)
    device.mcp.delay["self.audio_speaker.set_volume"] = SLOW_TIMEOUT_S * 3
    with pytest.raises(HomeAssistantError, match="in time") as timed_out:
        await hass.services.async_call(
            "media_player", "volume_set", {"entity_id": speaker, "volume_level": 0.5}, blocking=True
        )
    assert timed_out.value.translation_key == "tool_timeout"
    await asyncio.sleep(SLOW_TIMEOUT_S * 3)  # the late answer arrives, for an id long given up
    device.mcp.delay.clear()

    assert not device.closed
    await hass.services.async_call(
        "media_player", "volume_set", {"entity_id": speaker, "volume_level": 0.6}, blocking=True
    )
    assert device.mcp.volume == 60
    mic = await speak(device, speech, ListenMode.AUTO)
    await device.wait_for("tts", "stop")
    mic.cancel()


async def test_entities_survive_a_restart_unavailable_until_connected(
    hass: HomeAssistant, make_device: MakeDevice, hub_entry: MockConfigEntry
) -> None:
    device = await connected_device(hass, make_device)
    await device.close()
    speaker = entity_id(hass, "media_player", device, "speaker")
    await wait_for(hass, lambda: state(hass, speaker) == STATE_UNAVAILABLE)

    assert await hass.config_entries.async_reload(hub_entry.entry_id)
    await hass.async_block_till_done()
    keys = [
        ("media_player", "speaker"),
        ("number", "screen_brightness"),
        ("select", "screen_theme"),
        ("sensor", "battery_level"),
        ("sensor", "wifi_signal"),
        ("binary_sensor", "battery_charging"),
        ("button", "reboot"),
    ]
    for platform, key in keys:
        assert state(hass, entity_id(hass, platform, device, key)) == STATE_UNAVAILABLE, key

    await device.connect()
    await wait_for(hass, lambda: state(hass, speaker) == STATE_ON)
    for platform, key in keys:
        await wait_for(
            hass,
            lambda p=platform, k=key: state(hass, entity_id(hass, p, device, k))
            != STATE_UNAVAILABLE,
        )


async def test_a_board_without_a_tool_has_no_entity(
    hass: HomeAssistant, make_device: MakeDevice
) -> None:
    device = await connected_device(hass, make_device, camera=False)
    assert entity_id(hass, "media_player", device, "speaker")
    registry = er.async_get(hass)
    assert registry.async_get_entity_id("image", DOMAIN, f"{device.device_id}-last_photo") is None


@pytest.mark.parametrize(
    "payload",
    [
        '"not an object"',
        "[1, 2]",
        '{"jsonrpc": "2.0", "id": 999, "result": {}}',
        '{"jsonrpc": "2.0", "id": "1", "result": {}}',
        '{"jsonrpc": "1.0", "id": 1, "result": {}}',
        '{"jsonrpc": "2.0", "id": true, "result": {}}',
        '{"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}',
        '{"jsonrpc": "2.0", "id": 998, "error": "no object"}',
    ],
    ids=["string", "array", "unknown-id", "string-id", "old-jsonrpc", "bool-id", "notify", "err"],
)
async def test_malformed_mcp_from_the_device_is_logged_and_the_session_goes_on(
    hass: HomeAssistant,
    make_device: MakeDevice,
    payload: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    device = await connected_device(hass, make_device)
    caplog.set_level(logging.DEBUG, "custom_components.xiaozhi")
    await device.send_text(f'{{"type": "mcp", "payload": {payload}}}')
    speaker = entity_id(hass, "media_player", device, "speaker")
    await hass.services.async_call(
        "media_player", "volume_set", {"entity_id": speaker, "volume_level": 0.2}, blocking=True
    )
    assert device.mcp.volume == 20
    assert not device.closed
    assert any(word in caplog.text for word in ("MCP", "mcp", "payload", "request")), caplog.text


async def test_a_huge_tool_list_is_cut(
    hass: HomeAssistant, make_device: MakeDevice, caplog: pytest.LogCaptureFixture
) -> None:
    """A device listing endless tools gets `MAX_TOOLS` of them, and its session goes on."""
    device = await make_device()
    device.mcp.page_bytes = SMALL_PAGE_BYTES
    extra = device.mcp.tools[-1]
    for number in range(mcp.MAX_TOOLS + 20):
        device.mcp.tools.insert(
            1, type(extra)(f"self.extra.tool_{number}", "Extra.", {}, extra.handler)
        )
    await device.connect()
    await wait_for(
        hass, lambda: "tools are ignored" in caplog.text or "the rest are ignored" in caplog.text
    )
    hub = hass.config_entries.async_entries(DOMAIN)[0].runtime_data
    tools = hub.device_tools(hub.devices[device.device_id])
    await wait_for(hass, lambda: len(tools.tools) == mcp.MAX_TOOLS)
    assert not device.closed
