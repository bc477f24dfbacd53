"""Tests for diagnostics: useful, and without secrets."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
import json
from typing import Any

from homeassistant.config_entries import ConfigSubentryData
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.components.diagnostics import (
    get_diagnostics_for_config_entry,
    get_diagnostics_for_device,
)

from custom_components.xiaozhi.const import DOMAIN, SERVICE_DASHSCOPE, SUBENTRY_TTS
from tools.emulator import DeviceEmulator

type MakeDevice = Callable[..., Coroutine[Any, Any, DeviceEmulator]]

PROXY_URL = "wss://alice:pa55word@proxy.example/api-ws/v1/inference"


@pytest.fixture
def hub_entry() -> MockConfigEntry:
    """A hub with a speech service whose URL carries credentials."""
    return MockConfigEntry(
        domain=DOMAIN,
        title="Xiaozhi",
        data={},
        subentries_data=[
            ConfigSubentryData(
                data={"service": SERVICE_DASHSCOPE, "api_key": "sk-1", "base_url": PROXY_URL},
                subentry_type=SUBENTRY_TTS,
                title="CosyVoice",
                unique_id=None,
            )
        ],
    )


@pytest.mark.usefixtures("ota_url")
async def test_diagnostics_redact_the_token(
    hass: HomeAssistant, hass_client: Any, make_device: MakeDevice
) -> None:
    device = await make_device()
    await device.connect()
    entry = hass.config_entries.async_entries(DOMAIN)[0]
    hub = await get_diagnostics_for_config_entry(hass, hass_client, entry)
    assert hub["devices"][device.device_id]["connected"] is True
    assert hub["devices"][device.device_id]["session"]["protocol_version"] == 1
    assert hub["devices"][device.device_id]["session"]["codec"]["frames_decoded"] == 0
    assert hub["devices"][device.device_id]["last_turn_ms_after_speech_end"] == {}
    registry_device = dr.async_get(hass).async_get_device_by_identifier(
        (DOMAIN, device.device_id), entry.entry_id
    )
    assert registry_device is not None
    one = await get_diagnostics_for_device(hass, hass_client, entry, registry_device)
    assert one["board"] == "xiaozhi-emulator"
    token = device.ota_answer["websocket"]["token"]
    for output in (hub, one):
        text = json.dumps(output)
        assert token not in text
        assert device.client_id not in text  # with the MAC, it gets the token
    (subentry,) = hub["subentries"].values()
    assert subentry["data"]["base_url"] == "wss://**REDACTED**@proxy.example/api-ws/v1/inference"
    assert "pa55word" not in json.dumps(hub)
