"""Home Assistant's end of the link: the add-on serves the devices, this end answers them.

A `LinkClient` connects to the add-on (and keeps reconnecting, with backoff), answers its calls
with the host's `DeviceGate` and presents each channel the add-on serves as a `RelayedSession`:
the same `Session` a handler gets from a channel served here, so the satellite code is one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import suppress
import itertools
import logging
from typing import Any, Final

import aiohttp
from yarl import URL

from .const import CloseCode
from .errors import CheckInRefusedError, ProtocolError
from .host import ConnectionHandler, DeviceGate, SessionHandler
from .link import (
    LINK_AUDIO_FRAME_BYTES,
    LINK_HEARTBEAT_S,
    LINK_HELLO_TIMEOUT_S,
    LINK_IDLE_TIMEOUT_S,
    LINK_PATH,
    LINK_RECEIVE_SLICE,
    LINK_STATUS_PATH,
    LINK_VERSION,
    MAX_LINK_MESSAGE_BYTES,
    LinkEnd,
    Outbox,
    identity_from_dict,
    ota_answer_to_dict,
    ota_request_from_dict,
    pack_reply_audio,
    unpack_mic_audio,
)
from .messages import (
    REPLY_AUDIO,
    Abort,
    AudioParams,
    ClientHello,
    Listen,
    ListenMode,
    ListenState,
    Message,
    device_message_from_dict,
)
from .reply import Reply
from .session import (
    DeviceIdentity,
    SessionEnded,
    SessionStarted,
    SessionState,
    after_listen,
    after_reply,
)
from .timings import CodecStats, Stage, TurnTimings

_LOGGER = logging.getLogger(__name__)

LINK_RETRY_MIN_S: Final = 1.0
LINK_RETRY_MAX_S: Final = 30.0


class LinkAuthError(Exception):
    """The add-on refused the link secret."""


async def _ping(ws: aiohttp.ClientWebSocketResponse) -> None:
    """Ping the add-on every `LINK_HEARTBEAT_S`; its pongs keep the link's receive alive.

    Not aiohttp's own heartbeat: data arriving while it closes the link schedules that
    heartbeat again, a timer left behind on a closed link.
    """
    while True:
        await asyncio.sleep(LINK_HEARTBEAT_S)
        with suppress(ConnectionError):
            await ws.ping()


def link_url(base_url: str) -> str:
    """The link's WebSocket URL on the add-on at `base_url` (its HTTP port)."""
    url = URL(base_url)
    scheme = "wss" if url.scheme in ("https", "wss") else "ws"
    return str(url.with_scheme(scheme).with_path(LINK_PATH))


async def check_link(http: aiohttp.ClientSession, base_url: str, secret: str) -> None:
    """Check that an add-on answers at `base_url` and takes `secret`, without linking.

    Raises `LinkAuthError` for a refused secret, `aiohttp.ClientError`, `OSError` or
    `TimeoutError` when nothing (or something else) answers there.
    """
    url = URL(base_url).with_path(LINK_STATUS_PATH)
    async with (
        asyncio.timeout(LINK_HELLO_TIMEOUT_S),
        http.get(url, headers={"Authorization": f"Bearer {secret}"}) as response,
    ):
        if response.status == 401:
            raise LinkAuthError("the add-on refused the link secret")
        response.raise_for_status()
        status = await response.json()
    if not isinstance(status, dict) or status.get("version") != LINK_VERSION:
        raise aiohttp.ClientError(f"not a Xiaozhi add-on (or another link version): {status!r:.80}")


class LinkClient(LinkEnd):
    """Keeps Home Assistant linked to the add-on and relays its channels."""

    def __init__(
        self,
        gate: DeviceGate,
        base_url: str,
        secret: str,
        http: aiohttp.ClientSession,
        *,
        state_changed: Callable[[], None] | None = None,
        session_started: Callable[[RelayedSession], None] | None = None,
    ) -> None:
        """Link `gate` to the add-on at `base_url` with `secret`."""
        super().__init__()
        self.gate = gate
        self.url = link_url(base_url)
        self._secret = secret
        self._http = http
        self._state_changed = state_changed
        self.session_started = session_started
        self._task: asyncio.Task[None] | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self.sessions: dict[int, RelayedSession] = {}
        self.connections: dict[int, RelayedConnection] = {}
        self.mqtt_port: int | None = None  # the add-on's, for always-connected devices
        self.last_error: str | None = None
        self.secret_refused = False  # the add-on refused the secret at the last try
        self.links = 0  # how many times it linked

    def start(self) -> None:
        """Start linking (in the background, for as long as the client runs)."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="xiaozhi link")

    async def stop(self) -> None:
        """Close the link; the add-on keeps the devices' channels for the next link."""
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        delay = LINK_RETRY_MIN_S
        while True:
            try:
                await self._link()
                delay = LINK_RETRY_MIN_S  # it was up: retry soon
            except LinkAuthError as err:
                self.secret_refused = True
                self._failed(str(err))
                delay = LINK_RETRY_MAX_S
            except (aiohttp.ClientError, OSError, TimeoutError, ProtocolError) as err:
                self._failed(str(err) or type(err).__name__)
            await asyncio.sleep(delay)
            delay = min(delay * 2, LINK_RETRY_MAX_S)

    def _failed(self, error: str) -> None:
        if error != self.last_error:
            _LOGGER.warning("Cannot link to the Xiaozhi add-on at %s: %s", self.url, error)
            self.last_error = error
            self._changed()

    def _changed(self) -> None:
        if self._state_changed is not None:
            self._state_changed()

    async def _link(self) -> None:
        try:
            ws = await self._http.ws_connect(
                self.url,
                headers={"Authorization": f"Bearer {self._secret}"},
                max_msg_size=MAX_LINK_MESSAGE_BYTES,
            )
        except aiohttp.WSServerHandshakeError as err:
            if err.status == 401:
                raise LinkAuthError("the add-on refused the link secret") from None
            raise
        self._ws = ws
        try:
            await ws.send_json(
                {
                    "type": "hello",
                    "version": LINK_VERSION,
                    "timezone_offset": self.gate.timezone_offset_minutes(),
                }
            )
            hello = await ws.receive_json(timeout=LINK_HELLO_TIMEOUT_S)
            if not isinstance(hello, dict) or hello.get("version") != LINK_VERSION:
                raise ProtocolError(f"the add-on speaks another link version: {hello!r:.80}")
            mqtt_port = hello.get("mqtt_port")
            self.mqtt_port = mqtt_port if isinstance(mqtt_port, int) else None
            self._outbox = Outbox(ws.send_str, ws.send_bytes, self._overflowed)
            self.links += 1
            self.last_error = None
            self.secret_refused = False
            _LOGGER.info("Linked to the Xiaozhi add-on at %s", self.url)
            self._changed()
            pinging = asyncio.get_running_loop().create_task(_ping(ws), name="xiaozhi link ping")
            try:
                await self._serve(ws)
            finally:
                pinging.cancel()
                with suppress(asyncio.CancelledError):
                    await pinging
        finally:
            await self._unlinked(ws)

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        for handled in itertools.count(1):
            if handled % LINK_RECEIVE_SLICE == 0:
                await asyncio.sleep(0)  # let the loop run between slices of what was read
            try:
                msg = await ws.receive(timeout=LINK_IDLE_TIMEOUT_S)
            except TimeoutError:
                raise ProtocolError(f"the add-on silent for {LINK_IDLE_TIMEOUT_S:.0f} s") from None
            if msg.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSING,
                aiohttp.WSMsgType.CLOSED,
            ):
                return
            if msg.type is aiohttp.WSMsgType.TEXT:
                try:
                    data = msg.json()
                except ValueError:
                    raise ProtocolError("link message is not JSON") from None
                try:
                    await self._received(data)
                except (KeyError, TypeError, ValueError, AttributeError) as err:
                    raise ProtocolError(f"bad link message: {err!r}") from None
            elif msg.type is aiohttp.WSMsgType.BINARY:
                channel, pcm, scored = unpack_mic_audio(msg.data)
                if (session := self.sessions.get(channel)) is not None and session.ready:
                    session.handler.audio_received(session, pcm, scored)
            elif msg.type is aiohttp.WSMsgType.ERROR:
                raise ProtocolError(f"link error: {ws.exception()}")

    def _overflowed(self) -> None:
        if (ws := self._ws) is not None:
            asyncio.get_running_loop().create_task(ws.close())

    async def _unlinked(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """The link is down: every relayed session ends here (the add-on keeps the channels)."""
        was_linked = self._outbox is not None
        if self._outbox is not None:
            await self._outbox.close()
            self._outbox = None
        self._ws = None
        await ws.close()
        sessions, self.sessions = self.sessions, {}
        for session in sessions.values():
            session.ended()
        connections, self.connections = self.connections, {}
        for connection in connections.values():
            connection.changed(connected=False)
        if was_linked:
            _LOGGER.warning("The link to the Xiaozhi add-on closed; reconnecting")
            self._changed()

    # --- what the add-on sends -------------------------------------------------------------------

    async def _received(self, data: Any) -> None:
        """Handle one message, in order: a channel's events follow its opening."""
        if not isinstance(data, dict):
            raise ProtocolError("link message is not an object")
        kind = data.get("type")
        if kind == "call":
            await self._call(data)
            return
        if kind == "resume":
            await self._resume(data)
            return
        if kind in ("resume_connection", "connection", "connection_message", "connection_session"):
            await self._connection_event(kind, data)
            return
        channel = int(data["channel"])
        if (session := self.sessions.get(channel)) is None:
            return  # refused, or ended meanwhile
        match kind:
            case "started":
                session.started(data)
            case "event":
                session.received(device_message_from_dict(data["message"]))
            case "ended":
                del self.sessions[channel]
                session.ended()
                if session.connection is not None and session.connection.session is session:
                    session.connection.session = None
            case "spoken":
                session.spoken(int(data["reply"]), bool(data["finished"]), data.get("codec"))
            case "mark":
                session.marked(int(data["reply"]), Stage(data["stage"]))
            case _:
                raise ProtocolError(f"unknown link message {kind!r}")

    async def _call(self, data: dict[str, Any]) -> None:
        """Answer the add-on's question with the gate; channels are opened in order."""
        call_id, method, args = data["id"], data["method"], data["args"]
        if method == "open_channel":
            accepted = await self._open(int(args["channel"]), args["device"], args.get("token"))
            self.send({"type": "result", "id": call_id, "result": accepted})
            return
        if method == "open_connection":
            accepted = await self._open_connection(
                int(args["connection"]), args["device"], args.get("password")
            )
            self.send({"type": "result", "id": call_id, "result": accepted})
            return
        asyncio.get_running_loop().create_task(self._answer(call_id, method, args))

    async def _answer(self, call_id: int, method: str, args: dict[str, Any]) -> None:
        reply: dict[str, Any] = {"type": "result", "id": call_id}
        try:
            if method == "ota_answer":
                answer = await self.gate.ota_answer(
                    ota_request_from_dict(args["request"]), str(args["default_url"])
                )
                reply["result"] = ota_answer_to_dict(answer)
            elif method == "activation_done":
                reply["result"] = await self.gate.activation_done(
                    str(args["device"]), args.get("client")
                )
            else:
                reply["error"] = {"status": 400, "message": f"unknown call {method!r}"}
        except CheckInRefusedError as err:
            reply["error"] = {"status": err.status, "message": str(err)}
        except (ProtocolError, KeyError, TypeError) as err:
            reply["error"] = {"status": 400, "message": str(err)}
        self.send(reply)

    async def _open(self, channel: int, device: Any, token: str | None) -> bool:
        identity = identity_from_dict(device)
        handler = await self.gate.open_channel(identity, token)
        if handler is None:
            return False
        self.sessions[channel] = RelayedSession(self, channel, identity, handler)
        return True

    async def _open_connection(self, number: int, device: Any, password: str | None) -> bool:
        identity = identity_from_dict(device)
        handler = await self.gate.open_connection(identity, password)
        if handler is None:
            return False
        self.connections[number] = RelayedConnection(self, number, identity, handler)
        return True

    async def _connection_event(self, kind: str, data: dict[str, Any]) -> None:
        """An always-connected device: kept while away, (dis)connected, a message, a session."""
        number = int(data["connection"])
        if kind == "resume_connection":
            if not await self._open_connection(number, data["device"], data.get("password")):
                _LOGGER.info("Closing a kept connection of %s: no longer let in", data["device"])
                self.send(
                    {"type": "connection_close", "connection": number, "reason": "not authorized"}
                )
                return
            if data.get("connected"):
                self.connections[number].changed(connected=True)
            return
        if (connection := self.connections.get(number)) is None:
            return  # refused, or gone meanwhile
        match kind:
            case "connection":
                connected = bool(data["connected"])
                if not connected:
                    del self.connections[number]
                connection.changed(connected=connected)
            case "connection_message":
                message = device_message_from_dict(data["message"])
                connection.handler.message_received(connection, message)
            case "connection_session":
                self._session_on(connection, int(data["channel"]))

    def _session_on(self, connection: RelayedConnection, channel: int) -> RelayedSession:
        """A session the device opens on its connection, for the connection's handler."""
        handler = connection.handler.session_handler()
        session = RelayedSession(self, channel, connection.device, handler, connection)
        self.sessions[channel] = session
        connection.session = session
        connection.sessions_opened += 1
        return session

    async def _resume(self, data: dict[str, Any]) -> None:
        """A channel the add-on kept while HA was away: let it in again, where it was."""
        channel = int(data["channel"])
        if (number := data.get("connection")) is not None:
            if (connection := self.connections.get(int(number))) is None:
                return  # its connection was refused: closing that ends the session too
            self._session_on(connection, channel)
        elif not await self._open(channel, data["device"], data.get("token")):
            _LOGGER.info("Closing a kept channel of %s: no longer let in", data["device"])
            self.send(
                {
                    "type": "close",
                    "channel": channel,
                    "code": CloseCode.POLICY_VIOLATION,
                    "reason": "not authorized",
                }
            )
            return
        if "hello" not in data:
            return  # its hello is still to come
        session = self.sessions[channel]
        session.started(data)
        if data.get("listening") and session.ready:
            mode = ListenMode(data["listen_mode"]) if data.get("listen_mode") else None
            session.received(Listen(state=ListenState.START, mode=mode))


class RelayedConnection:
    """An always-connected device's connection the add-on serves (a `Connection` here)."""

    def __init__(
        self,
        client: LinkClient,
        number: int,
        device: DeviceIdentity,
        handler: ConnectionHandler,
    ) -> None:
        """Relay connection `number` of `device` to `handler`."""
        self.client = client
        self.number = number
        self.device = device
        self.handler = handler
        self.connected = False
        self.sessions_opened = 0
        self.session: RelayedSession | None = None

    def __repr__(self) -> str:
        """Name the device in logs."""
        return f"<RelayedConnection {self.device.device_id}>"

    def changed(self, *, connected: bool) -> None:
        """The device (dis)connected, or the link went down: tell the handler."""
        self.connected = connected
        self.handler.connection_changed(self)

    async def send(self, message: Message) -> None:
        """Send one JSON message over the device's connection."""
        if self.connected and self.client.linked:
            self.client.send(
                {"type": "connection_send", "connection": self.number, "message": message.to_dict()}
            )

    async def close(self, reason: str) -> None:
        """Disconnect the device."""
        self.client.send({"type": "connection_close", "connection": self.number, "reason": reason})


class RelayedSession:
    """A device channel the add-on serves, as its handler here sees it (a `Session`)."""

    def __init__(
        self,
        client: LinkClient,
        channel: int,
        device: DeviceIdentity,
        handler: SessionHandler,
        connection: RelayedConnection | None = None,
    ) -> None:
        """Relay channel `channel` of `device` to `handler` (a session on `connection`, if any)."""
        self.client = client
        self.connection = connection
        self.channel = channel
        self.device = device
        self.handler = handler
        self.session_id = ""
        self.hello: ClientHello | None = None
        self.listen_mode: ListenMode | None = None
        self.reply_audio: AudioParams = REPLY_AUDIO
        self.codec_stats = CodecStats()
        self.state = SessionState.CONNECTING
        self._reply: Reply | None = None
        self._reply_ids = itertools.count(1)
        self._spoken: dict[int, tuple[asyncio.Future[bool], TurnTimings]] = {}

    def __repr__(self) -> str:
        """Name the device and session in logs."""
        return f"<RelayedSession {self.device.device_id} {self.session_id} {self.state}>"

    @property
    def ready(self) -> bool:
        """Whether the hello is done and the channel is open."""
        return self.state not in (SessionState.CONNECTING, SessionState.CLOSED)

    @property
    def closed(self) -> bool:
        """Whether the channel is gone, or the link to it."""
        return self.state is SessionState.CLOSED or not self.client.linked

    @property
    def speaking(self) -> bool:
        """Whether a reply is being sent."""
        return self._reply is not None

    # --- from the add-on -------------------------------------------------------------------------

    def started(self, data: dict[str, Any]) -> None:
        """The device's hello was answered."""
        hello = data["hello"]
        self.hello = ClientHello.from_dict(hello)
        self.reply_audio = AudioParams.from_dict(data.get("reply_audio"), default=REPLY_AUDIO)
        self.session_id = str(data["session_id"])
        self.state = SessionState.IDLE
        self.handler.session_event(self, SessionStarted())
        if self.client.session_started is not None:
            self.client.session_started(self)

    def received(self, message: Any) -> None:
        """A message from the device, handled as a local session handles it."""
        if not self.ready:
            return
        if isinstance(message, Listen):
            self.listen_mode, self.state = after_listen(message, self.listen_mode, self.state)
        elif isinstance(message, Abort):
            self.interrupt()
        self.handler.session_event(self, message)

    def ended(self) -> None:
        """The channel (or the link) is gone; tell the handler (once)."""
        if self.state is SessionState.CLOSED:
            return
        was_ready = self.ready
        self.state = SessionState.CLOSED
        self.interrupt()
        for future, _ in self._spoken.values():
            if not future.done():
                future.set_result(False)
        if was_ready:
            self.handler.session_event(self, SessionEnded())

    def spoken(self, number: int, finished: bool, codec: Any) -> None:
        """The add-on finished sending reply `number`."""
        if isinstance(codec, dict):
            for name in ("decode_s", "frames_decoded", "encode_s", "frames_encoded"):
                if isinstance(value := codec.get(name), int | float):
                    setattr(self.codec_stats, name, value)
        if (entry := self._spoken.get(number)) is not None and not entry[0].done():
            entry[0].set_result(finished)

    def marked(self, number: int, stage: Stage) -> None:
        """The add-on reached `stage` of reply `number`."""
        if (entry := self._spoken.get(number)) is not None:
            entry[1].mark(stage, asyncio.get_running_loop().time())

    # --- Session ---------------------------------------------------------------------------------

    async def send(self, message: Message) -> None:
        """Send one JSON message (dropped once the channel is closed)."""
        if not self.closed:
            self.client.send(
                {"type": "send", "channel": self.channel, "message": message.to_dict()}
            )

    async def close(self, code: CloseCode = CloseCode.NORMAL, reason: str = "") -> None:
        """Stop the reply and close the channel."""
        self.interrupt()
        self.client.send({"type": "close", "channel": self.channel, "code": code, "reason": reason})

    def interrupt(self) -> None:
        """Stop the reply being sent at once."""
        if self._reply is not None:
            self._reply.interrupt()

    async def speak(self, reply: Reply, timings: TurnTimings | None = None) -> bool:
        """Relay one turn's output to the add-on, which sends it; return False if interrupted."""
        if self._reply is not None:
            self._reply.interrupt()
        self._reply = reply
        number = next(self._reply_ids)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._spoken[number] = (future, timings or TurnTimings())
        if self.ready:
            self.state = SessionState.SPEAKING
        try:
            if self.closed:
                return False
            self.client.send({"type": "speak", "channel": self.channel, "reply": number})
            await self._forward(reply, number)
            return await future and not reply.interrupted
        finally:
            self._spoken.pop(number, None)
            if self._reply is reply:
                self._reply = None
                if self.ready:
                    self.state = after_reply(self.listen_mode)

    async def _forward(self, reply: Reply, number: int) -> None:
        """Send what the producers add to the reply, as they add it."""
        bytes_per_s = self.reply_audio.sample_rate * 2
        sent: dict[str, bool] = {}
        while not self.closed:
            if reply.interrupted:
                self.client.send({"type": "interrupt", "channel": self.channel, "reply": number})
                return
            reply.read_audio(bytes_per_s)
            update = reply.take_update()
            flags = {
                "speak": update.speak,
                "has_audio": update.has_audio,
                "audio_ended": update.audio_ended,
                "finished": update.finished,
            }
            # The audio first (the update may say it ended after it), in bounded frames.
            for start in range(0, len(update.pcm), LINK_AUDIO_FRAME_BYTES):
                chunk = update.pcm[start : start + LINK_AUDIO_FRAME_BYTES]
                self.client.send_bytes(pack_reply_audio(self.channel, number, chunk))
            if update.messages or update.sentences or flags != sent:
                self.client.send(
                    {
                        "type": "reply",
                        "channel": self.channel,
                        "reply": number,
                        "messages": [message.to_dict() for message in update.messages],
                        "sentences": update.sentences,
                    }
                    | flags
                )
                sent = flags
            if reply.done:
                return
            await reply.wait()
