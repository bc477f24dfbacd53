"""What the core asks of whoever runs it (the HA integration, the add-on), and what it gives.

Small interfaces, each with one job:
- a `Session` is one conversation channel with a device, as its handler sees it: the same
  whether the channel is served here (`DeviceSession`) or relayed from the add-on
  (`RelayedSession`);
- a `DeviceGate` decides who gets in: it answers OTA checks and activation polls and, once per
  connection, resolves a device's credentials to the handler of its session;
- a `SessionHandler` (the device's satellite in HA) receives that session's events directly;
- a `ConnectionHandler` follows an always-connected (MQTT) device between its sessions, through
  its `Connection` (served here, `DeviceConnection`, or relayed, `RelayedConnection`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, TypeIs

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .const import CloseCode
    from .messages import AudioParams, ClientHello, DeviceMessage, ListenMode, Message
    from .offload import Offload
    from .ota import OtaAnswer, OtaRequest
    from .reply import Reply
    from .session import DeviceIdentity, SessionEvent, SessionState
    from .timings import CodecStats, TurnTimings


class Session(Protocol):
    """One conversation channel with a device, wherever it is served."""

    @property
    def device(self) -> DeviceIdentity:
        """Who is on the channel."""

    @property
    def session_id(self) -> str:
        """The id the server hello gave the channel."""

    @property
    def hello(self) -> ClientHello | None:
        """The device's hello, once received."""

    @property
    def listen_mode(self) -> ListenMode | None:
        """The mode of the device's last `listen start`."""

    @property
    def reply_audio(self) -> AudioParams:
        """The audio format replies are sent in (PCM handed to `speak` is at its rate)."""

    @property
    def codec_stats(self) -> CodecStats:
        """Time spent in the codec for this channel."""

    @property
    def state(self) -> SessionState:
        """Where the channel is in the protocol's state machine."""

    @property
    def ready(self) -> bool:
        """Whether the hello is done and the channel is open."""

    @property
    def closed(self) -> bool:
        """Whether the channel is gone (messages sent now are dropped)."""

    @property
    def speaking(self) -> bool:
        """Whether a reply is being sent."""

    async def send(self, message: Message) -> None:
        """Send one JSON message with the session id (dropped once the channel is closed)."""

    async def speak(self, reply: Reply, timings: TurnTimings | None = None) -> bool:
        """Send one turn's output until it is done; return False if it was interrupted."""

    def interrupt(self) -> None:
        """Stop the reply being sent at once."""

    async def close(self, code: CloseCode = ..., reason: str = "") -> None:
        """Stop the reply and close the channel."""


class Connection(Protocol):
    """An always-connected (MQTT) device's connection, wherever it is served."""

    @property
    def connected(self) -> bool:
        """Whether the device is connected now."""

    @property
    def sessions_opened(self) -> int:
        """How many sessions the device opened on this connection."""

    @property
    def session(self) -> Session | None:
        """The session open on the connection now."""

    async def send(self, message: Message) -> None:
        """Send one JSON message over the connection (between sessions too)."""

    async def close(self, reason: str) -> None:
        """Disconnect the device."""


class SessionHandler(Protocol):
    """Receives the events of one device's sessions; runs on the event loop, never blocks."""

    def session_event(self, session: Session, event: SessionEvent) -> None:
        """Handle a session event: started, ended, or a message from the device."""

    def audio_received(
        self, session: Session, pcm: bytes, scored: Sequence[tuple[float, float]] | None
    ) -> None:
        """Handle microphone audio: 16-bit mono PCM at 16 kHz.

        `scored`: the voice scores of the windows it completes (`vad.ScoredWindow`), where the
        host scores them (`DeviceGate.microphones`); None where it does not.
        """


class ConnectionHandler(Protocol):
    """Follows one always-connected device: its connection, and what it sends between sessions."""

    def connection_changed(self, connection: Connection) -> None:
        """The device connected, or its connection closed (`connection.connected`)."""

    def message_received(self, connection: Connection, message: DeviceMessage) -> None:
        """A message outside any session (an MCP answer between conversations)."""

    def session_handler(self) -> SessionHandler:
        """Return who handles the session the device opens now."""


class DeviceGate(Protocol):
    """Decides which devices are served, and who handles each one's session."""

    websocket_path: str

    @property
    def microphones(self) -> Offload | None:
        """Where the devices' microphones are decoded and scored for voice (`worker.py`).

        Their handlers get the scores and run no model. None: decoded on this process's codec
        thread, unscored.
        """

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


def is_connection(channel: Connection | Session) -> TypeIs[Connection]:
    """Whether a device's channel is its always-connected connection, not one session."""
    return hasattr(channel, "sessions_opened")
