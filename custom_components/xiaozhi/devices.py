"""The xiaozhi devices a hub knows, and the session each one has open."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from homeassistant.core import CALLBACK_TYPE, callback
from homeassistant.helpers.device_registry import CONNECTION_NETWORK_MAC, DeviceInfo

from .const import DOMAIN, MANUFACTURER
from .core import DeviceSession, SessionHandler
from .core.timings import Stage, TurnTimings


def device_name(device_id: str, board: str | None) -> str:
    """A default name users can tell apart: board and the end of the MAC."""
    suffix = device_id.replace(":", "")[-4:].upper()
    return f"{board or 'Xiaozhi'} {suffix}"


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
    session: DeviceSession | None = None
    handler: SessionHandler | None = None  # its satellite, which the device's sessions report to
    _turn: TurnTimings = field(default_factory=TurnTimings, repr=False)  # filled as it goes
    _finished_turn: TurnTimings | None = field(default=None, repr=False)
    _listeners: list[Callable[[], None]] = field(default_factory=list, repr=False)

    @property
    def name(self) -> str:
        """A default name users can tell apart: board and the end of the MAC."""
        return device_name(self.device_id, self.board)

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
    def last_turn(self) -> TurnTimings:
        """The latest turn the user spoke in, not an empty one just opened after it.

        In auto mode the device's next `listen start` follows every reply at once: its new turn
        stays empty until the user speaks, and diagnostics keep showing the finished one.
        """
        if Stage.SPEECH_END in self._turn.marks or self._finished_turn is None:
            return self._turn
        return self._finished_turn

    @last_turn.setter
    def last_turn(self, timings: TurnTimings) -> None:
        """A new turn starts."""
        if Stage.SPEECH_END in self._turn.marks:
            self._finished_turn = self._turn
        self._turn = timings

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
