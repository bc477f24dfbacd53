"""What the core asks of whoever runs it (the HA integration, the add-on).

Small interfaces, each with one job:
- a `DeviceGate` decides who gets in: it answers OTA checks and activation polls and, once per
  connection, resolves a device's credentials to the handler of its session;
- a `SessionHandler` (the device's satellite in HA) receives that session's events directly;
- a `ConnectionHandler` follows an always-connected (MQTT) device between its sessions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .messages import DeviceMessage
    from .mqtt_server import DeviceConnection
    from .ota import OtaAnswer, OtaRequest
    from .session import DeviceIdentity, DeviceSession, SessionEvent


class SessionHandler(Protocol):
    """Receives the events of one device's sessions; runs on the event loop, never blocks."""

    def session_event(self, session: DeviceSession, event: SessionEvent) -> None:
        """Handle a session event: started, ended, or a message from the device."""

    def audio_received(self, session: DeviceSession, pcm: bytes) -> None:
        """Handle microphone audio: 16-bit mono PCM at 16 kHz."""


class ConnectionHandler(Protocol):
    """Follows one always-connected device: its connection, and what it sends between sessions."""

    def connection_changed(self, connection: DeviceConnection) -> None:
        """The device connected, or its connection closed (`connection.connected`)."""

    def message_received(self, connection: DeviceConnection, message: DeviceMessage) -> None:
        """A message outside any session (an MCP answer between conversations)."""

    def session_handler(self) -> SessionHandler:
        """Return who handles the session the device opens now."""


class DeviceGate(Protocol):
    """Decides which devices are served, and who handles each one's session."""

    websocket_path: str

    async def ota_answer(self, request: OtaRequest, default_url: str) -> OtaAnswer:
        """Return the device's channel, with the activation an unbound one must do first.

        `default_url` is the channel URL derived from the device's own request. Raise
        `CheckInRefusedError` to refuse the check (its status goes back to the device).
        """

    async def activation_done(self, device_id: str, client_id: str | None) -> bool:
        """Return whether the user confirmed the activation code of this device (MAC, Client-Id).

        Only once the binding is stored for good: a 200 lets the device forget its code.
        """

    async def open_channel(
        self, device: DeviceIdentity, token: str | None
    ) -> SessionHandler | None:
        """Return the handler of a device allowed to open a channel with this token, else None."""

    async def open_connection(
        self, device: DeviceIdentity, password: str | None
    ) -> ConnectionHandler | None:
        """Return the handler of a device allowed to stay connected (MQTT), else None."""

    def timezone_offset_minutes(self) -> int:
        """Return the offset from UTC the device clock should show, in minutes east."""
