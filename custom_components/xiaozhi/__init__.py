"""Xiaozhi: xiaozhi-esp32 voice devices served by Home Assistant."""

from __future__ import annotations

from homeassistant.const import EVENT_HOMEASSISTANT_STOP, Platform
from homeassistant.core import Event, HomeAssistant, callback
from homeassistant.helpers import issue_registry as ir
from homeassistant.helpers.device_registry import DeviceEntry

from .const import (
    AUTH_MODE_LOCAL_NETWORK,
    CONF_AUTH_MODE,
    DOMAIN,
    ISSUE_OPEN_TO_LOCAL_NETWORK,
    SUBENTRY_CONVERSATION,
    SUBENTRY_MCP_ENDPOINT,
    SUBENTRY_STT,
    SUBENTRY_TTS,
)
from .hub import XiaozhiConfigEntry, XiaozhiHub
from .issues import async_delete_all_issues, async_raise_issue
from .llm_api import async_register_api
from .mcp_endpoint import async_setup_endpoints
from .memory import async_get_memory
from .redact import filter_loggers
from .store import DeviceStore
from .subentry import SubentryReloader
from .views import async_register_views

PLATFORMS = [
    Platform.ASSIST_SATELLITE,
    Platform.BINARY_SENSOR,
    Platform.BUTTON,
    Platform.CONVERSATION,
    Platform.IMAGE,
    Platform.MEDIA_PLAYER,
    Platform.NOTIFY,
    Platform.NUMBER,
    Platform.SELECT,
    Platform.SENSOR,
    Platform.STT,
    Platform.TTS,
]
# Loggers whose lines may quote a service URL, with credentials if the user wrote them into it.
URL_LOGGERS = [__name__, "openai", "httpx"]
# The platforms each subentry type has entities on: reloaded alone when such subentries change.
SUBENTRY_PLATFORMS = {
    SUBENTRY_CONVERSATION: [Platform.BUTTON, Platform.CONVERSATION],
    SUBENTRY_STT: [Platform.STT],
    SUBENTRY_TTS: [Platform.TTS],
    SUBENTRY_MCP_ENDPOINT: [Platform.BINARY_SENSOR],
}


async def async_setup_entry(hass: HomeAssistant, entry: XiaozhiConfigEntry) -> bool:
    """Start serving devices."""
    hub = XiaozhiHub(hass, entry)
    entry.runtime_data = hub
    await hub.async_setup()
    endpoints = await async_setup_endpoints(hass, entry)  # before their sensors are added
    await hass.config_entries.async_forward_entry_setups(entry, PLATFORMS)
    async_register_views(hass)
    entry.async_on_unload(async_register_api(hass))
    entry.async_on_unload(filter_loggers(URL_LOGGERS))

    async def _async_stop(event: Event) -> None:
        await hub.async_shutdown()

    entry.async_on_unload(hass.bus.async_listen_once(EVENT_HOMEASSISTANT_STOP, _async_stop))
    hub.async_start_link()
    subentries = SubentryReloader(hass, entry, SUBENTRY_PLATFORMS, PLATFORMS)

    async def _async_updated(hass: HomeAssistant, entry: XiaozhiConfigEntry) -> None:
        """Options are read when used; subentry changes reload only their platforms."""
        _async_update_issues(hass, entry)
        await endpoints.async_sync()
        await entry.runtime_data.async_options_updated()
        for removed in await subentries.async_reload_changed():
            await async_get_memory(hass).async_forget(removed)

    entry.async_on_unload(entry.add_update_listener(_async_updated))
    _async_update_issues(hass, entry)
    return True


@callback
def _async_update_issues(hass: HomeAssistant, entry: XiaozhiConfigEntry) -> None:
    """Warn (in Repairs) while any device on the local network can add itself."""
    if entry.options.get(CONF_AUTH_MODE) == AUTH_MODE_LOCAL_NETWORK:
        async_raise_issue(hass, ISSUE_OPEN_TO_LOCAL_NETWORK, ISSUE_OPEN_TO_LOCAL_NETWORK, fix={})
    else:
        ir.async_delete_issue(hass, DOMAIN, ISSUE_OPEN_TO_LOCAL_NETWORK)


async def async_unload_entry(hass: HomeAssistant, entry: XiaozhiConfigEntry) -> bool:
    """Close every device channel; the endpoints answer 404 until set up again."""
    await entry.runtime_data.async_shutdown()
    return await hass.config_entries.async_unload_platforms(entry, PLATFORMS)


async def async_remove_entry(hass: HomeAssistant, entry: XiaozhiConfigEntry) -> None:
    """The hub is deleted: its bound devices, its repairs and its agents' memory go with it."""
    async_delete_all_issues(hass)
    await DeviceStore(hass, entry).async_remove()
    await async_get_memory(hass).async_remove()


async def async_remove_config_entry_device(
    hass: HomeAssistant, entry: XiaozhiConfigEntry, device_entry: DeviceEntry
) -> bool:
    """Let the user remove a device: its token is revoked, it must be activated again.

    A cloud service's device goes with its subentry, not on its own.
    """
    identifiers = [key for domain, key in device_entry.identifiers if domain == DOMAIN]
    if any(key in entry.subentries for key in identifiers):
        return False
    for device_id in identifiers:
        await entry.runtime_data.async_forget(device_id)
    return True
