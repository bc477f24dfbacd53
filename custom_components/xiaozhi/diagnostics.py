"""Diagnostics for the hub and each device, with every secret redacted."""

from __future__ import annotations

from typing import Any

from homeassistant.components.diagnostics import async_redact_data
from homeassistant.const import CONF_API_KEY
from homeassistant.core import HomeAssistant
from homeassistant.helpers.device_registry import DeviceEntry

from .const import CONF_CLIENT_ID, CONF_LINK_SECRET, CONF_MQTT_PASSWORD, CONF_TOKEN, DOMAIN
from .devices import XiaozhiDevice
from .hub import XiaozhiConfigEntry
from .mcp_endpoint import DATA_ENDPOINTS
from .redact import redact_url_credentials

# The Client-Id is half of what gets a bound device's token from the OTA endpoint.
TO_REDACT = {
    CONF_TOKEN,
    CONF_API_KEY,
    CONF_CLIENT_ID,
    CONF_MQTT_PASSWORD,
    CONF_LINK_SECRET,
    "key",
}


def _device(device: XiaozhiDevice) -> dict[str, Any]:
    session = device.session
    connection = device.connection
    link = getattr(session, "link", None)  # a relayed session has no link here
    return {
        **device.stored(),
        "connected": device.connected,
        "always_connected": None
        if connection is None
        else {"connected": connection.connected, "sessions_opened": connection.sessions_opened},
        "udp_audio": None
        if (channel := getattr(link, "channel", None)) is None
        else {
            "packets_received": channel.packets_received,
            "packets_sent": channel.packets_sent,
            "device_address_known": channel.device_address is not None,
        },
        "session": None
        if session is None
        else {
            "session_id": session.session_id,
            "state": session.state,
            "listen_mode": session.listen_mode,
            "protocol_version": session.device.protocol_version,
            "client_hello": session.hello.to_dict() if session.hello else None,
            "reply_audio": session.reply_audio.to_dict(),
            "codec": session.codec_stats.as_dict(),
        },
        "last_turn_ms_after_speech_end": device.last_turn.since_speech_end(),
        "last_turn_ended_by": device.last_turn.ended_by,
        "last_turn_command_check_s": device.last_turn.check_s,
    }


def _endpoints(hass: HomeAssistant, entry: XiaozhiConfigEntry) -> dict[str, Any]:
    """Each MCP endpoint's link: state, last error, connected since, tools served, calls made."""
    links = hass.data.get(DATA_ENDPOINTS, {}).get(entry.entry_id)
    if links is None:
        return {}
    return {
        subentry_id: {"title": service.subentry.title, **service.link.stats.as_dict()}
        for subentry_id, service in links.services.items()
    }


async def async_get_config_entry_diagnostics(
    hass: HomeAssistant, entry: XiaozhiConfigEntry
) -> dict[str, Any]:
    """Return the hub's state."""
    hub = entry.runtime_data
    data = async_redact_data(
        {
            "ota_url": hub.ota_url,
            "addon_link": None
            if hub.link is None
            else {
                "url": hub.link.url,
                "linked": hub.link.linked,
                "links": hub.link.links,
                "last_error": hub.link.last_error,
                "relayed_sessions": len(hub.link.sessions),
            },
            "options": dict(entry.options),
            "subentries": {
                subentry_id: {
                    "type": subentry.subentry_type,
                    "title": subentry.title,
                    "data": dict(subentry.data),
                }
                for subentry_id, subentry in entry.subentries.items()
            },
            "open_sessions": len(hub.sessions),
            "always_connected": hub.mqtt.stats() if hub.mqtt.running else None,
            "devices": {device_id: _device(device) for device_id, device in hub.devices.items()},
            "awaiting_activation": sorted({p.device_id for p in hub.activations.pending.values()}),
            "mcp_endpoints": _endpoints(hass, entry),
        },
        TO_REDACT,
    )
    return redact_url_credentials(data)


async def async_get_device_diagnostics(
    hass: HomeAssistant, entry: XiaozhiConfigEntry, device_entry: DeviceEntry
) -> dict[str, Any]:
    """Return one device's state."""
    hub = entry.runtime_data
    for domain, device_id in device_entry.identifiers:
        if domain == DOMAIN and (device := hub.devices.get(device_id)) is not None:
            data = async_redact_data({"device_id": device_id, **_device(device)}, TO_REDACT)
            return redact_url_credentials(data)
    return {}
