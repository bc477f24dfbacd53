"""The hub: hosts the xiaozhi core inside Home Assistant for one config entry."""

from __future__ import annotations

from datetime import timedelta
import hmac
import logging

from homeassistant.config_entries import ConfigEntry
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers.dispatcher import async_dispatcher_send
from homeassistant.helpers.network import NoURLAvailableError, get_url
from homeassistant.util import dt as dt_util
from yarl import URL

from .const import CONF_DEVICES, CONF_TOKEN, DOMAIN, MANUFACTURER, SIGNAL_NEW_DEVICE
from .core import (
    DeviceIdentity,
    DeviceSession,
    OtaRequest,
    SessionHost,
    WebsocketConfig,
    XiaozhiHost,
    XiaozhiServer,
)
from .core.messages import Abort, Listen, Mcp
from .devices import XiaozhiDevice

_LOGGER = logging.getLogger(__name__)

type XiaozhiConfigEntry = ConfigEntry[XiaozhiHub]


class XiaozhiHub(XiaozhiHost):
    """Answers OTA checks, serves device channels and routes each device's events."""

    def __init__(self, hass: HomeAssistant, entry: XiaozhiConfigEntry) -> None:
        """Create the hub for a config entry, with the devices it already knows."""
        self.hass = hass
        self.entry = entry
        self.server = XiaozhiServer(self)
        self.devices: dict[str, XiaozhiDevice] = {
            device_id: XiaozhiDevice(
                device_id,
                board=info.get("board"),
                firmware_version=info.get("firmware_version"),
                chip_model=info.get("chip_model"),
            )
            for device_id, info in entry.data.get(CONF_DEVICES, {}).items()
        }

    @property
    def sessions(self) -> set[DeviceSession]:
        """The open device channels."""
        return self.server.sessions

    # --- devices ---------------------------------------------------------------------------------

    @callback
    def _async_remember(
        self,
        device_id: str,
        *,
        board: str | None = None,
        firmware_version: str | None = None,
        chip_model: str | None = None,
    ) -> XiaozhiDevice:
        """Return the device, adding or updating what the hub stores about it."""
        device = self.devices.get(device_id)
        is_new = device is None
        if device is None:
            device = self.devices[device_id] = XiaozhiDevice(device_id)
        before = device.stored()
        device.board = board or device.board
        device.firmware_version = firmware_version or device.firmware_version
        device.chip_model = chip_model or device.chip_model
        if is_new or device.stored() != before:
            self.hass.config_entries.async_update_entry(
                self.entry,
                data={
                    **self.entry.data,
                    CONF_DEVICES: {d.device_id: d.stored() for d in self.devices.values()},
                },
            )
            dr.async_get(self.hass).async_get_or_create(
                config_entry_id=self.entry.entry_id,
                identifiers={(DOMAIN, device_id)},
                connections={(dr.CONNECTION_NETWORK_MAC, device_id)},
                name=device.name,
                manufacturer=MANUFACTURER,
                model=device.board,
                sw_version=device.firmware_version,
            )
        if is_new:
            _LOGGER.info("New xiaozhi device %s (%s)", device_id, device.board)
            async_dispatcher_send(self.hass, SIGNAL_NEW_DEVICE.format(self.entry.entry_id), device)
        return device

    # --- OTA and authorization -------------------------------------------------------------------

    async def websocket_config(self, request: OtaRequest, default_url: str) -> WebsocketConfig:
        """Point the device at the host and port it used for its OTA check."""
        self._async_remember(
            request.device_id,
            board=request.board_type or request.board_name,
            firmware_version=request.firmware_version,
            chip_model=request.chip_model,
        )
        return WebsocketConfig(
            url=self._reachable_url(default_url), token=self.entry.data[CONF_TOKEN]
        )

    def _reachable_url(self, default_url: str) -> str:
        """Return `default_url`, or HA's own internal URL when the firmware could not parse it."""
        url = URL(default_url)
        if url.host and ":" not in url.host:  # the firmware cannot parse IPv6 literals
            return default_url
        try:
            base = URL(get_url(self.hass, allow_external=False, allow_cloud=False))
        except NoURLAvailableError:
            return default_url
        return str(url.with_host(base.host or "").with_port(base.port))

    async def authorize(self, device: DeviceIdentity, token: str | None) -> bool:
        """Accept devices that present the hub's token."""
        expected: str = self.entry.data[CONF_TOKEN]
        return token is not None and hmac.compare_digest(token.encode(), expected.encode())

    def timezone_offset_minutes(self) -> int:
        """Set device clocks to HA's time zone."""
        offset = dt_util.now().utcoffset() or timedelta()
        return int(offset.total_seconds() // 60)

    # --- session events, routed to the device's satellite ----------------------------------------

    def session_started(self, session: DeviceSession) -> None:
        """Bind the channel to its device."""
        device = self._async_remember(session.device.device_id)
        device.set_session(session)
        _LOGGER.debug("Device %s connected (session %s)", device.device_id, session.session_id)
        if device.voice is not None:
            device.voice.session_started(session)

    def audio_received(self, session: DeviceSession, pcm: bytes) -> None:
        """Forward microphone audio."""
        if (voice := self._voice(session)) is not None:
            voice.audio_received(session, pcm)

    def listen_received(self, session: DeviceSession, message: Listen) -> None:
        """Forward listen messages."""
        if (voice := self._voice(session)) is not None:
            voice.listen_received(session, message)

    def abort_received(self, session: DeviceSession, message: Abort) -> None:
        """Forward aborts."""
        if (voice := self._voice(session)) is not None:
            voice.abort_received(session, message)

    def mcp_received(self, session: DeviceSession, message: Mcp) -> None:
        """Forward MCP messages."""
        if (voice := self._voice(session)) is not None:
            voice.mcp_received(session, message)

    def session_ended(self, session: DeviceSession) -> None:
        """Unbind the channel from its device."""
        device = self.devices.get(session.device.device_id)
        if device is None or device.session is not session:
            return  # a replaced connection
        device.set_session(None)
        _LOGGER.debug("Device %s disconnected", device.device_id)
        if device.voice is not None:
            device.voice.session_ended(session)

    def _voice(self, session: DeviceSession) -> SessionHost | None:
        device = self.devices.get(session.device.device_id)
        if device is None or device.session is not session:
            return None
        return device.voice

    async def async_shutdown(self) -> None:
        """Close every device channel."""
        await self.server.close_all()
