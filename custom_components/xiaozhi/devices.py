"""The xiaozhi devices a hub knows, and the session each one has open."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from homeassistant.core import CALLBACK_TYPE, callback
from homeassistant.helpers.device_registry import CONNECTION_NETWORK_MAC, DeviceInfo

from .const import DOMAIN, MANUFACTURER
from .core import DeviceSession, SessionHandler
from .core.timings import TurnTimings


@dataclass
class XiaozhiDevice:
    """One device: what it told us about itself, and its open channel if any."""

    device_id: str  # the MAC, lowercase and colon separated
    board: str | None = None
    firmware_version: str | None = None
    chip_model: str | None = None
    token: str | None = None  # set once the user bound the device with its activation code
    client_id: str | None = None  # with the MAC, who the device is (None: bound before 0.2)
    added_by: str = "code"  # "code", or the auth mode that let it in without one
    vision_token: str | None = None  # the camera's upload secret, sent in MCP `initialize`
    tool_names: list[str] = field(default_factory=list)  # its MCP tools, kept while it is away
    status_keys: list[str] = field(default_factory=list)  # what its status tool reports
    channel_url: str | None = None  # the WebSocket URL its last OTA answer gave it
    session: DeviceSession | None = None
    handler: SessionHandler | None = None  # its satellite, which the device's sessions report to
    last_turn: TurnTimings = field(default_factory=TurnTimings)  # the latest, filled as it goes
    _listeners: list[Callable[[], None]] = field(default_factory=list, repr=False)

    @property
    def name(self) -> str:
        """A default name users can tell apart: board and the end of the MAC."""
        suffix = self.device_id.replace(":", "")[-4:].upper()
        return f"{self.board or 'Xiaozhi'} {suffix}"

    @property
    def device_info(self) -> DeviceInfo:
        """How the device appears in HA's device registry."""
        return DeviceInfo(
            identifiers={(DOMAIN, self.device_id)},
            connections={(CONNECTION_NETWORK_MAC, self.device_id)},
            name=self.name,
            manufacturer=MANUFACTURER,
            model=self.board,
            sw_version=self.firmware_version,
        )

    @property
    def connected(self) -> bool:
        """Whether the device has a channel open."""
        return self.session is not None

    def stored(self) -> dict[str, Any]:
        """Return what survives a restart."""
        return {
            "board": self.board,
            "firmware_version": self.firmware_version,
            "chip_model": self.chip_model,
            "token": self.token,
            "client_id": self.client_id,
            "added_by": self.added_by,
            "vision_token": self.vision_token,
            "tool_names": self.tool_names,
            "status_keys": self.status_keys,
        }

    @callback
    def set_session(self, session: DeviceSession | None) -> None:
        """Record the open channel (None when it closed) and tell listeners."""
        self.session = session
        for listener in list(self._listeners):
            listener()

    @callback
    def async_listen(self, listener: Callable[[], None]) -> CALLBACK_TYPE:
        """Call `listener` when the device connects or disconnects."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)
