"""The small interface a host (the HA integration, the add-on) implements to run the core."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from .const import WEBSOCKET_PATH

if TYPE_CHECKING:
    from .messages import Abort, Listen, Mcp
    from .ota import Activation, OtaRequest, WebsocketConfig
    from .session import DeviceIdentity, DeviceSession


class SessionHost:
    """What a host does with device sessions; every event handler defaults to doing nothing.

    Handlers run on the event loop and must not block: hand work to tasks.
    """

    def session_started(self, session: DeviceSession) -> None:
        """Handle a device that finished its hello; the session may now send."""

    def audio_received(self, session: DeviceSession, pcm: bytes) -> None:
        """Handle microphone audio: 16-bit mono PCM at 16 kHz."""

    def listen_received(self, session: DeviceSession, message: Listen) -> None:
        """Handle the device starting or stopping to listen, or hearing its wake word."""

    def abort_received(self, session: DeviceSession, message: Abort) -> None:
        """Handle the user interrupting the reply; playback has already stopped."""

    def mcp_received(self, session: DeviceSession, message: Mcp) -> None:
        """Handle a JSON-RPC message from the device's MCP server."""

    def session_ended(self, session: DeviceSession) -> None:
        """Handle the channel closing (once, only for sessions that started)."""


class XiaozhiHost(SessionHost, ABC):
    """A host of the OTA and WebSocket endpoints."""

    websocket_path: str = WEBSOCKET_PATH

    @abstractmethod
    async def ota_answer(
        self, request: OtaRequest, default_url: str
    ) -> WebsocketConfig | Activation:
        """Return a bound device's channel, or the activation an unbound one must do first.

        `default_url` is the channel URL derived from the device's own request.
        """

    @abstractmethod
    async def activation_done(self, device_id: str) -> bool:
        """Return whether the user confirmed the device's activation code."""

    @abstractmethod
    async def authorize(self, device: DeviceIdentity, token: str | None) -> bool:
        """Return whether a device may open a channel with this token."""

    def timezone_offset_minutes(self) -> int:
        """Return the offset from UTC the device clock should show, in minutes east."""
        return 0
