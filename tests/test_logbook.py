"""The device's Activity (HA's logbook, with its recorder) says when its Assistant cannot talk."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from homeassistant.components.recorder import Recorder
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr, entity_registry as er
from homeassistant.setup import async_setup_component
from homeassistant.util import dt as dt_util
import pytest
from pytest_homeassistant_custom_component.components.recorder.common import (
    async_wait_recording_done,
)

from custom_components.xiaozhi.const import DOMAIN
from custom_components.xiaozhi.core.messages import ListenMode
from tools.emulator import DeviceEmulator

type MakeDevice = Callable[..., Coroutine[Any, Any, DeviceEmulator]]
NO_STT = "its assistant Home Assistant has no speech-to-text (see Settings > Repairs)"


@pytest.fixture(autouse=True)
def _custom_integrations(recorder_db_url: str, enable_custom_integrations: None) -> None:
    """The recorder's database before `hass` (the recorder fixtures insist), then our code."""


@pytest.fixture
async def ha_core(recorder_mock: Recorder, hass: HomeAssistant) -> None:
    """A real HA with its Activity: the recorder stores events, the logbook describes them."""
    for component in ("homeassistant", "websocket_api", "config", "repairs", "logbook"):
        assert await async_setup_component(hass, component, {})


async def async_activity(hass: HomeAssistant, client: Any, device_id: str) -> list[Any]:
    """What the device page's Activity card lists, as the frontend asks for it."""
    await async_wait_recording_done(hass)
    await client.send_json_auto_id(
        {
            "type": "logbook/get_events",
            "start_time": dt_util.start_of_local_day().isoformat(),
            "device_ids": [device_id],
        }
    )
    response = await client.receive_json()
    assert response["success"], response
    return [entry for entry in response["result"] if entry.get("domain") == DOMAIN]


async def test_activity_says_why_a_device_cannot_talk(
    hass: HomeAssistant, make_device: MakeDevice, hass_ws_client: Any
) -> None:
    # A fresh HA: the preferred Assistant has no speech-to-text, and the new device uses it.
    device = await make_device()
    hub = hass.config_entries.async_entries(DOMAIN)[0]
    registry_device = dr.async_get(hass).async_get_device_by_identifier(
        (DOMAIN, device.device_id), hub.entry_id
    )
    assert registry_device is not None
    satellite = er.async_get(hass).async_get_entity_id(
        "assist_satellite", DOMAIN, f"{device.device_id}-assist_satellite"
    )
    client = await hass_ws_client(hass)
    found = await async_activity(hass, client, registry_device.id)
    assert [(entry["name"], entry["message"], entry["entity_id"]) for entry in found] == [
        (registry_device.name, f"cannot hold a voice conversation: {NO_STT}", satellite)
    ]

    # The user tries anyway: the refused turn is an entry of its own.
    await device.connect()
    await device.listen_start(ListenMode.AUTO)
    assert "speech-to-text" in (await device.wait_for("alert"))["message"]
    await device.wait_closed(timeout=5)
    found = await async_activity(hass, client, registry_device.id)
    assert [entry["message"] for entry in found] == [
        f"cannot hold a voice conversation: {NO_STT}",
        f"could not answer: {NO_STT}",
    ]

    # Renamed by the user: the entries use the name the user gave.
    dr.async_get(hass).async_update_device(registry_device.id, name_by_user="Kitchen speaker")
    found = await async_activity(hass, client, registry_device.id)
    assert {entry["name"] for entry in found} == {"Kitchen speaker"}
