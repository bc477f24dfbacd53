"""The xiaozhi devices a hub knows, the session each one has open, and how to reach it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from homeassistant.core import CALLBACK_TYPE, callback
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers.device_registry import CONNECTION_NETWORK_MAC, DeviceInfo

from .const import DEFAULT_TRANSPORT, DOMAIN, MANUFACTURER
from .core import Connection, Session, SessionHandler
from .core.messages import DeviceMessage, Message
from .core.timings import Stage, TurnTimings


def device_name(device_id: str, board: str | None) -> str:
    """A default name users can tell apart: board and the end of the MAC."""
    suffix = device_id.replace(":", "")[-4:].upper()
    return f"{board or 'Xiaozhi'} {suffix}"


class DeviceUnreachableError(HomeAssistantError):
    """The device has no session open and no always-connected connection."""


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
    transport: str = DEFAULT_TRANSPORT  # what its OTA answers give it (TRANSPORTS)
    mqtt_password: str | None = field(default=None, repr=False)  # its MQTT secret
    session: Session | None = None
    connection: Connection | None = None  # its MQTT connection, between sessions too
    handler: SessionHandler | None = None  # its satellite, which the device's sessions report to
    # What keeps its Assistant from voice (problem, Assistant's name), as last checked (voice.py).
    voice_problem: tuple[str, str] | None = None
    _turn: TurnTimings = field(default_factory=TurnTimings, repr=False)  # filled as it goes
    _finished_turn: TurnTimings | None = field(default=None, repr=False)
    _listeners: list[Callable[[], None]] = field(default_factory=list, repr=False)
    _message_listeners: list[Callable[[DeviceMessage], None]] = field(
        default_factory=list, repr=False
    )

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

    @property
    def reachable(self) -> bool:
        """Whether a message sent now reaches the device (a session, or its MQTT connection)."""
        open_session = self.session is not None and not self.session.closed
        return open_session or (self.connection is not None and self.connection.connected)

    async def async_send(self, message: Message) -> None:
        """Send one JSON message now: over the open session, else over the MQTT connection.

        Raises `DeviceUnreachableError` when neither is there (a WebSocket device between
        conversations).
        """
        if (session := self.session) is not None and session.ready and not session.closed:
            await session.send(message)
        elif (connection := self.connection) is not None and connection.connected:
            await connection.send(message)
        else:
            raise DeviceUnreachableError(
                translation_domain=DOMAIN,
                translation_key="not_connected",
                translation_placeholders={"device": self.name},
            )

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
            "transport": self.transport,
            "mqtt_password": self.mqtt_password,
        }

    @callback
    def set_session(self, session: Session | None) -> None:
        """Record the open channel (None when it closed) and tell listeners."""
        self.session = session
        self._changed()

    @callback
    def set_connection(self, connection: Connection | None) -> None:
        """Record the MQTT connection (None when it closed) and tell listeners."""
        self.connection = connection
        self._changed()

    def _changed(self) -> None:
        for listener in list(self._listeners):
            listener()

    @callback
    def async_listen(self, listener: Callable[[], None]) -> CALLBACK_TYPE:
        """Call `listener` when the device connects or disconnects (a session or MQTT)."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    @callback
    def message_received(self, message: DeviceMessage) -> None:
        """A message the device sent outside any session (MQTT): tell message listeners."""
        for listener in list(self._message_listeners):
            listener(message)

    @callback
    def async_listen_messages(self, listener: Callable[[DeviceMessage], None]) -> CALLBACK_TYPE:
        """Call `listener` with each message the device sends between sessions (MCP answers)."""
        self._message_listeners.append(listener)
        return lambda: self._message_listeners.remove(listener)
