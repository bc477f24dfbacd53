"""Xiaozhi: xiaozhi-esp32 voice devices served by Home Assistant."""

from __future__ import annotations

from homeassistant.const import EVENT_HOMEASSISTANT_STOP, Platform
from homeassistant.core import Event, HomeAssistant
from homeassistant.helpers.device_registry import DeviceEntry

from .const import DOMAIN
from .hub import XiaozhiConfigEntry, XiaozhiHub
from .views import async_register_views

PLATFORMS = [Platform.ASSIST_SATELLITE, Platform.SELECT]


async def async_setup_entry(hass: HomeAssistant, entry: XiaozhiConfigEntry) -> bool:
    """Start serving devices."""
    hub = XiaozhiHub(hass, entry)
    entry.runtime_data = hub
    await hass.config_entries.async_forward_entry_setups(entry, PLATFORMS)
    async_register_views(hass)

    async def _async_stop(event: Event) -> None:
        await hub.async_shutdown()

    entry.async_on_unload(hass.bus.async_listen_once(EVENT_HOMEASSISTANT_STOP, _async_stop))
    return True


async def async_unload_entry(hass: HomeAssistant, entry: XiaozhiConfigEntry) -> bool:
    """Close every device channel; the endpoints answer 404 until set up again."""
    await entry.runtime_data.async_shutdown()
    return await hass.config_entries.async_unload_platforms(entry, PLATFORMS)


async def async_remove_config_entry_device(
    hass: HomeAssistant, entry: XiaozhiConfigEntry, device_entry: DeviceEntry
) -> bool:
    """Let the user remove a device: its token is revoked, it must be activated again."""
    for domain, device_id in device_entry.identifiers:
        if domain == DOMAIN:
            entry.runtime_data.async_forget(device_id)
    return True
