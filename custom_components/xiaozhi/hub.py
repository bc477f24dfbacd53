"""The hub: hosts the xiaozhi core inside Home Assistant for one config entry."""

from __future__ import annotations

from datetime import timedelta
import hmac
import logging

from homeassistant.config_entries import ConfigEntry
from homeassistant.core import HomeAssistant
from homeassistant.helpers.network import NoURLAvailableError, get_url
from homeassistant.util import dt as dt_util
from yarl import URL

from .const import CONF_TOKEN
from .core import (
    DeviceIdentity,
    DeviceSession,
    OtaRequest,
    WebsocketConfig,
    XiaozhiHost,
    XiaozhiServer,
)

_LOGGER = logging.getLogger(__name__)

type XiaozhiConfigEntry = ConfigEntry[XiaozhiHub]


class XiaozhiHub(XiaozhiHost):
    """Answers OTA checks and serves device channels on HA's own HTTP server."""

    def __init__(self, hass: HomeAssistant, entry: XiaozhiConfigEntry) -> None:
        """Create the hub for a config entry."""
        self.hass = hass
        self.entry = entry
        self.server = XiaozhiServer(self)

    @property
    def sessions(self) -> set[DeviceSession]:
        """The open device channels."""
        return self.server.sessions

    async def websocket_config(self, request: OtaRequest, default_url: str) -> WebsocketConfig:
        """Point the device at the host and port it used for its OTA check."""
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

    def session_started(self, session: DeviceSession) -> None:
        """Log new channels."""
        _LOGGER.debug(
            "Device %s connected (session %s)", session.device.device_id, session.session_id
        )

    def session_ended(self, session: DeviceSession) -> None:
        """Log closed channels."""
        _LOGGER.debug("Device %s disconnected", session.device.device_id)

    async def async_shutdown(self) -> None:
        """Close every device channel."""
        await self.server.close_all()
