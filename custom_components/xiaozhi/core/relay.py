"""The add-on's end of the link: it serves the devices and Home Assistant decides and answers.

`RelayGate` is the `DeviceGate` of the add-on's servers. While HA is linked, every OTA check,
activation poll and channel is HA's to decide (a call over the link), and each channel's events
and microphone audio go to HA, whose commands and replies come back to the channel. While HA is
away (restarting), devices HA let in keep their channels and get in again; one that talks is
shown that HA is restarting. When HA links again, every open channel is handed back to it
(`resume`), so the next turn works without the device reconnecting.
"""

from __future__ import annotations

import asyncio
import base64
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import suppress
from functools import partial
import hmac
import itertools
import logging
import time
from typing import Any, Final

from aiohttp import WSMsgType, web

from .const import WEBSOCKET_PATH, CloseCode
from .errors import CheckInRefusedError, ProtocolError
from .host import Connection, Session, SessionHandler
from .link import (
    LINK_CALL_TIMEOUT_S,
    LINK_HELLO_TIMEOUT_S,
    LINK_IDLE_TIMEOUT_S,
    LINK_VERSION,
    MAX_LINK_MESSAGE_BYTES,
    LinkEnd,
    Outbox,
    identity_to_dict,
    ota_answer_from_dict,
    ota_request_to_dict,
    pack_mic_audio,
    unpack_reply_audio,
)
from .messages import (
    Alert,
    DeviceMessage,
    Listen,
    ListenState,
    Message,
    server_message_from_dict,
)
from .mqtt_server import DeviceConnection
from .offload import Offload
from .ota import OtaAnswer, OtaRequest
from .reply import Reply
from .session import (
    DeviceIdentity,
    DeviceSession,
    SessionEnded,
    SessionEvent,
    SessionStarted,
    SessionState,
)
from .timings import Stage, TurnTimings

_LOGGER = logging.getLogger(__name__)

RESTART_NOTICE_INTERVAL_S: Final = 10.0  # a device that keeps talking is told once in this time
RESTARTING_MESSAGES: Final = {
    "zh": "Home Assistant 正在重启，请稍后再试。",
    "en": "Home Assistant is restarting. Please try again in a moment.",
}
RESTARTING_STATUS: Final = "Home Assistant"
MAX_NOTICE_BYTES: Final = 24000 * 2 * 10  # 10 s of the spoken notice at the reply rate, at most


class HomeAssistantAwayError(CheckInRefusedError):
    """HA is not linked and this device has no answer from it to reuse."""

    def __init__(self) -> None:
        """Refuse with 503: the device tries again later."""
        super().__init__(503, "Home Assistant is not connected")


class RelayGate(LinkEnd):
    """Serves devices for the Home Assistant linked to it, and keeps them while HA is away."""

    websocket_path = WEBSOCKET_PATH

    def __init__(self, secret: str) -> None:
        """Accept links that present `secret`."""
        super().__init__()
        self._secret = secret.encode()
        self._link: web.WebSocketResponse | None = None
        self._calls: dict[int, asyncio.Future[Any]] = {}
        self._call_ids = itertools.count(1)
        self._channel_ids = itertools.count(1)
        self.channels: dict[int, RelayedChannel] = {}
        self._connection_ids = itertools.count(1)
        self.connections: dict[int, RelayedConnection] = {}
        self._mqtt_let_in: dict[str, tuple[str | None, str | None]] = {}  # (client, password)
        self.mqtt_port: int | None = None  # where always-connected devices connect, if served
        # (MAC, Client-Id) -> HA's last OTA answer, for bound devices: the pair is who a device
        # is (its token goes only to the same pair), as in the hub's own authorization.
        self._answers: dict[tuple[str, str | None], Any] = {}
        self._let_in: dict[str, tuple[str | None, str | None]] = {}  # device -> (client, token)
        self.languages: dict[str, str] = {}  # device -> the language of its last OTA check
        # device -> (text, PCM at the reply rate): HA's spoken "restarting", said while HA is away
        self.notices: dict[str, tuple[str, bytes]] = {}
        self._timezone_offset: int | None = None
        self.links_accepted = 0
        # Where the devices' microphones are decoded and scored (the add-on's worker process);
        # None: on the codec thread of this process.
        self.microphones: Offload | None = None

    # --- the link --------------------------------------------------------------------------------

    def _authorized(self, request: web.Request) -> bool:
        offered = request.headers.get("Authorization", "").removeprefix("Bearer ").encode()
        if hmac.compare_digest(offered, self._secret):
            return True
        _LOGGER.warning("Refused a link from %s: wrong secret", request.remote)
        return False

    async def handle_status(self, request: web.Request) -> web.Response:
        """Answer HA's check of the URL and secret (before it links), without linking."""
        if not self._authorized(request):
            return web.json_response({"error": "wrong link secret"}, status=401)
        return web.json_response(
            {"version": LINK_VERSION, "linked": self.linked, "channels": len(self.channels)}
        )

    async def handle_link(self, request: web.Request) -> web.StreamResponse:
        """Serve Home Assistant's link until it closes; a new link replaces the old."""
        if not self._authorized(request):
            return web.json_response({"error": "wrong link secret"}, status=401)
        # HA pings (its heartbeat); a link silent for LINK_IDLE_TIMEOUT_S is dead (see _serve).
        ws = web.WebSocketResponse(max_msg_size=MAX_LINK_MESSAGE_BYTES)
        await ws.prepare(request)
        if (previous := self._link) is not None:
            _LOGGER.info("A new link from %s replaces the open one", request.remote)
            self._link = None  # its handler's own clean-up is skipped: done here, in order
            await previous.close(code=CloseCode.REPLACED, message=b"replaced")
            await self._unlinked()
        self._link = ws
        try:
            await self._serve(ws, request.remote)
        except ProtocolError as err:
            _LOGGER.warning("Closing the link from %s: %s", request.remote, err)
            await ws.close(code=CloseCode.PROTOCOL_ERROR, message=str(err).encode()[:120])
        finally:
            if self._link is ws:
                await self._unlinked()
        return ws

    async def _serve(self, ws: web.WebSocketResponse, remote: str | None) -> None:
        try:
            hello = await ws.receive_json(timeout=LINK_HELLO_TIMEOUT_S)
        except (TimeoutError, ValueError, TypeError) as err:
            raise ProtocolError(f"no link hello: {err!r}") from None
        if not isinstance(hello, dict) or hello.get("type") != "hello":
            raise ProtocolError("the link must start with a hello")
        if hello.get("version") != LINK_VERSION:
            raise ProtocolError(f"link version {hello.get('version')!r} is not {LINK_VERSION}")
        self._timezone_offset = _int_or_none(hello.get("timezone_offset"))
        self._outbox = Outbox(ws.send_str, ws.send_bytes, self._overflowed)
        self.links_accepted += 1
        _LOGGER.info("Home Assistant linked from %s; %d channels open", remote, len(self.channels))
        self._outbox.put({"type": "hello", "version": LINK_VERSION, "mqtt_port": self.mqtt_port})
        for connection in list(self.connections.values()):
            connection.resume()  # before their sessions: those are resumed through them
        for channel in list(self.channels.values()):
            channel.resume()
        while True:
            try:
                msg = await ws.receive(timeout=LINK_IDLE_TIMEOUT_S)
            except TimeoutError:
                raise ProtocolError(
                    f"Home Assistant silent for {LINK_IDLE_TIMEOUT_S:.0f} s"
                ) from None
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                return
            if msg.type is WSMsgType.TEXT:
                try:
                    data = msg.json()
                except ValueError:
                    raise ProtocolError("link message is not JSON") from None
                self._received(data)
            elif msg.type is WSMsgType.BINARY:
                channel_id, reply_id, pcm = unpack_reply_audio(msg.data)
                if (target := self.channels.get(channel_id)) is not None:
                    target.reply_audio(reply_id, pcm)
            elif msg.type is WSMsgType.ERROR:
                _LOGGER.warning("Link error: %s", ws.exception())
                return

    async def close(self) -> None:
        """Close the link (the add-on is stopping)."""
        if (link := self._link) is not None:
            await link.close(code=CloseCode.GOING_AWAY, message=b"add-on stopping")

    def _overflowed(self) -> None:
        if (link := self._link) is not None:
            asyncio.get_running_loop().create_task(link.close(code=CloseCode.GOING_AWAY))

    async def _unlinked(self) -> None:
        """HA went away: calls fail, replies stop; the channels stay open."""
        self._link = None
        if self._outbox is not None:
            await self._outbox.close()
            self._outbox = None
            _LOGGER.warning("Home Assistant unlinked; keeping %d channels", len(self.channels))
        for future in self._calls.values():
            if not future.done():
                future.set_exception(HomeAssistantAwayError())
        self._calls.clear()
        for channel in self.channels.values():
            channel.unlinked()

    def _received(self, data: Any) -> None:
        try:
            self._dispatch(data)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ProtocolError(f"bad link message: {err!r}") from None

    def _dispatch(self, data: Any) -> None:
        if not isinstance(data, dict):
            raise ProtocolError("link message is not an object")
        kind = data.get("type")
        if kind == "notice":
            pcm = base64.b64decode(data["pcm"], validate=True)
            self.notices[str(data["device"])] = (str(data["text"]), pcm[:MAX_NOTICE_BYTES])
            return
        if kind == "result":
            future = self._calls.pop(data.get("id", 0), None)
            if future is not None and not future.done():
                future.set_result(data)
            return
        if "connection" in data and kind in ("connection_send", "connection_close"):
            if (connection := self.connections.get(data["connection"])) is None:
                return  # it disconnected meanwhile
            if kind == "connection_send":
                connection.send(server_message_from_dict(data["message"]))
            else:
                connection.close(str(data.get("reason", "")))
            return
        if (channel := self.channels.get(data.get("channel", 0))) is None:
            return  # a channel that ended meanwhile
        match kind:
            case "send":
                channel.send(server_message_from_dict(data["message"]))
            case "speak":
                channel.speak(int(data["reply"]))
            case "reply":
                channel.reply_update(int(data["reply"]), data)
            case "interrupt":
                channel.interrupt(int(data["reply"]))
            case "close":
                channel.close(CloseCode(int(data["code"])), str(data.get("reason", "")))
            case _:
                raise ProtocolError(f"unknown link message {kind!r}")

    async def _call(self, method: str, **args: Any) -> Any:
        """Ask HA; raises `HomeAssistantAwayError` when it is not linked or does not answer."""
        if self._outbox is None:
            raise HomeAssistantAwayError
        call_id = next(self._call_ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._calls[call_id] = future
        self._outbox.put({"type": "call", "id": call_id, "method": method, "args": args})
        try:
            async with asyncio.timeout(LINK_CALL_TIMEOUT_S):
                answer = await future
        except TimeoutError:
            raise HomeAssistantAwayError from None
        finally:
            self._calls.pop(call_id, None)
        if (error := answer.get("error")) is not None:
            raise CheckInRefusedError(int(error.get("status", 500)), str(error.get("message")))
        return answer.get("result")

    # --- DeviceGate ------------------------------------------------------------------------------

    async def ota_answer(self, request: OtaRequest, default_url: str) -> OtaAnswer:
        """HA's answer; while HA is away, the last one it gave this bound device."""
        who = (request.device_id, request.client_id)
        try:
            data = await self._call(
                "ota_answer", request=ota_request_to_dict(request), default_url=default_url
            )
        except HomeAssistantAwayError:
            if (data := self._answers.get(who)) is None:
                raise
            _LOGGER.info("HA is away: %s gets its last OTA answer", request.device_id)
        answer = ota_answer_from_dict(data)
        # Kept for bound devices only: anyone can send checks with made-up MACs.
        if answer.activation is None:
            self._answers[who] = data
            if request.language:
                self.languages[request.device_id] = request.language
        else:
            self._answers.pop(who, None)
        return answer

    async def activation_done(self, device_id: str, client_id: str | None) -> bool:
        """Whether HA bound the device (not yet, while HA is away)."""
        try:
            return bool(await self._call("activation_done", device=device_id, client=client_id))
        except HomeAssistantAwayError:
            return False

    async def open_channel(
        self, device: DeviceIdentity, token: str | None
    ) -> RelayedChannel | None:
        """A channel HA lets in; while HA is away, one it let in before with the same token."""
        number = next(self._channel_ids)
        try:
            accepted = await self._call(
                "open_channel", channel=number, device=identity_to_dict(device), token=token
            )
        except HomeAssistantAwayError:
            accepted = self._let_in.get(device.device_id) == (device.client_id, token)
            if accepted:
                _LOGGER.info("HA is away: %s keeps its channel", device.device_id)
        if not accepted:
            return None
        self._let_in[device.device_id] = (device.client_id, token)
        channel = RelayedChannel(self, number, device, token)
        self.channels[number] = channel
        return channel

    def new_channel(
        self, device: DeviceIdentity, token: str | None, connection: int | None = None
    ) -> RelayedChannel:
        """Register the channel of a session about to open."""
        channel = RelayedChannel(self, next(self._channel_ids), device, token, connection)
        self.channels[channel.number] = channel
        return channel

    async def open_connection(
        self, device: DeviceIdentity, password: str | None
    ) -> RelayedConnection | None:
        """An always-connected device HA lets in; while HA is away, one it let in before."""
        number = next(self._connection_ids)
        try:
            accepted = await self._call(
                "open_connection",
                connection=number,
                device=identity_to_dict(device),
                password=password,
            )
        except HomeAssistantAwayError:
            accepted = self._mqtt_let_in.get(device.device_id) == (device.client_id, password)
            if accepted:
                _LOGGER.info("HA is away: %s keeps its MQTT connection", device.device_id)
        if not accepted:
            return None
        self._mqtt_let_in[device.device_id] = (device.client_id, password)
        connection = RelayedConnection(self, number, device, password)
        self.connections[number] = connection
        return connection

    def timezone_offset_minutes(self) -> int:
        """HA's time zone; the add-on's own while HA was never linked."""
        if self._timezone_offset is not None:
            return self._timezone_offset
        return (time.localtime().tm_gmtoff or 0) // 60

    def channel_ended(self, channel: RelayedChannel) -> None:
        """Forget a channel once its session ended."""
        if self.channels.get(channel.number) is channel:
            del self.channels[channel.number]

    def connection_ended(self, connection: RelayedConnection) -> None:
        """Forget a connection once the device disconnected."""
        if self.connections.get(connection.number) is connection:
            del self.connections[connection.number]


class RelayedConnection:
    """An always-connected device's connection served here for HA (its `ConnectionHandler`)."""

    def __init__(
        self, gate: RelayGate, number: int, device: DeviceIdentity, password: str | None
    ) -> None:
        """Relay connection `number` of `device`."""
        self.gate = gate
        self.number = number
        self.device = device
        self.password = password
        self.connection: DeviceConnection | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def connection_changed(self, connection: Connection) -> None:
        """Tell HA the device connected, or that this connection closed."""
        if isinstance(connection, DeviceConnection):
            self.connection = connection
        if not connection.connected:
            self.gate.connection_ended(self)
        self.gate.send(
            {"type": "connection", "connection": self.number, "connected": connection.connected}
        )

    def message_received(self, connection: Connection, message: DeviceMessage) -> None:
        """Pass a message sent between sessions (an MCP answer) to HA; dropped while away."""
        self.gate.send(
            {"type": "connection_message", "connection": self.number, "message": message.to_dict()}
        )

    def session_handler(self) -> SessionHandler:
        """The device opens a session on its connection: a channel relayed to HA."""
        channel = self.gate.new_channel(self.device, None, self.number)
        self.gate.send(
            {"type": "connection_session", "connection": self.number, "channel": channel.number}
        )
        return channel

    def resume(self) -> None:
        """Hand the connection to a newly linked HA."""
        self.gate.send(
            {
                "type": "resume_connection",
                "connection": self.number,
                "device": identity_to_dict(self.device),
                "password": self.password,
                "connected": self.connection is not None and self.connection.connected,
            }
        )

    def send(self, message: Message) -> None:
        """Send HA's message over the connection."""
        if self.connection is not None:
            self._run(self.connection.send(message))

    def close(self, reason: str) -> None:
        """Disconnect the device, as HA asked."""
        if self.connection is not None:
            self._run(self.connection.close(reason))

    def _run(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro, name="xiaozhi relayed connection")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class RelayedChannel:
    """One device channel served here for HA: its events go over the link, HA's replies come."""

    def __init__(
        self,
        gate: RelayGate,
        number: int,
        device: DeviceIdentity,
        token: str | None,
        connection: int | None = None,
    ) -> None:
        """Relay the channel `number` of `device` (a session on `connection`, if MQTT)."""
        self.gate = gate
        self.number = number
        self.device = device
        self.token = token
        self.connection = connection
        self.session: DeviceSession | None = None
        self._replies: dict[int, _RelayedReply] = {}
        self._last_notice = -RESTART_NOTICE_INTERVAL_S
        self._tasks: set[asyncio.Task[None]] = set()
        # HA's sends and closes, done one after another in the order HA asked for them.
        self._in_order: deque[Callable[[], Awaitable[None]]] = deque()
        self._draining = False

    # --- SessionHandler --------------------------------------------------------------------------

    def session_event(self, session: Session, event: SessionEvent) -> None:
        """Pass the event to HA; while HA is away, tell a device that talks."""
        if isinstance(session, DeviceSession):
            self.session = session
        match event:
            case SessionStarted():
                self.gate.send({"type": "started", "channel": self.number, **self._started()})
            case SessionEnded():
                self.gate.channel_ended(self)
                for reply in list(self._replies.values()):
                    reply.reply.interrupt()
                self.gate.send({"type": "ended", "channel": self.number})
            case _:
                if self.gate.linked:
                    self.gate.send(
                        {"type": "event", "channel": self.number, "message": event.to_dict()}
                    )
                elif _talks(event):
                    self._notice_restarting()

    def audio_received(
        self, session: Session, pcm: bytes, scored: Sequence[tuple[float, float]] | None
    ) -> None:
        """Pass the microphone audio and its voice scores to HA (dropped while HA is away)."""
        self.gate.send_bytes(pack_mic_audio(self.number, pcm, scored), droppable=True)

    def _started(self) -> dict[str, Any]:
        session = self.session
        assert session is not None
        assert session.hello is not None
        return {
            "session_id": session.session_id,
            "hello": session.hello.to_dict(),
            "reply_audio": session.reply_audio.to_dict(),
        }

    # --- the link --------------------------------------------------------------------------------

    def resume(self) -> None:
        """Hand the channel to a newly linked HA, with where the conversation is."""
        message: dict[str, Any] = {
            "type": "resume",
            "channel": self.number,
            "device": identity_to_dict(self.device),
            "token": self.token,
            "connection": self.connection,
        }
        session = self.session
        if session is not None and session.ready:
            message |= self._started()
            message["listen_mode"] = session.listen_mode
            message["listening"] = session.state is SessionState.LISTENING
        self.gate.send(message)

    def unlinked(self) -> None:
        """HA went away: its replies cannot go on."""
        for reply in list(self._replies.values()):
            reply.reply.interrupt()

    def send(self, message: Message) -> None:
        """Send HA's message on the channel, after the ones HA sent before it."""
        if self.session is not None:
            self._after_the_others(partial(self.session.send, message))

    def close(self, code: CloseCode, reason: str) -> None:
        """Close the channel, as HA asked, once what HA sent before is sent."""
        if self.session is not None:
            self._after_the_others(partial(self.session.close, code, reason))

    def _after_the_others(self, action: Callable[[], Awaitable[None]]) -> None:
        self._in_order.append(action)
        if not self._draining:
            self._draining = True
            self._run(self._drain())

    async def _drain(self) -> None:
        try:
            while self._in_order:
                await self._in_order.popleft()()
        finally:
            self._draining = False

    def speak(self, number: int) -> None:
        """Start sending HA's reply `number`; HA is told when it is done."""
        relayed = self._replies[number] = _RelayedReply()
        self._run(self._speak(number, relayed))

    async def _speak(self, number: int, relayed: _RelayedReply) -> None:
        finished = False
        try:
            if self.session is not None and self.session.ready:
                timings = _ForwardedTimings(self.gate, self.number, number)
                finished = await self.session.speak(relayed.reply, timings)
        finally:
            self._replies.pop(number, None)
            self.gate.send(
                {
                    "type": "spoken",
                    "channel": self.number,
                    "reply": number,
                    "finished": finished,
                    "codec": None if self.session is None else self.session.codec_stats.as_dict(),
                }
            )

    def reply_update(self, number: int, data: dict[str, Any]) -> None:
        """Add what HA added to its reply."""
        if (relayed := self._replies.get(number)) is not None:
            relayed.update(data)

    def reply_audio(self, number: int, pcm: bytes) -> None:
        """Add reply audio from HA."""
        if (relayed := self._replies.get(number)) is not None:
            relayed.audio.put_nowait(pcm)

    def interrupt(self, number: int) -> None:
        """Stop HA's reply at once."""
        if (relayed := self._replies.get(number)) is not None:
            relayed.reply.interrupt()

    # --- while HA is away ------------------------------------------------------------------------

    def _notice_restarting(self) -> None:
        """Show (and sound) that HA is restarting; not again for a while, however often asked."""
        session = self.session
        now = asyncio.get_running_loop().time()
        if session is None or now - self._last_notice < RESTART_NOTICE_INTERVAL_S:
            return
        self._last_notice = now
        language = self.gate.languages.get(self.device.device_id, "")
        text = RESTARTING_MESSAGES["zh" if language.lower().startswith("zh") else "en"]
        _LOGGER.info("%s talked while HA is away: telling it HA is restarting", session)
        spoken = self.gate.notices.get(self.device.device_id)
        if spoken is not None:
            text = spoken[0]
        reply = Reply()
        reply.send(Alert(status=RESTARTING_STATUS, message=text, emotion="sad"))
        reply.start_speaking()
        reply.sentence(text)
        if spoken is not None:  # said in the voice of the device's own Assistant
            reply.play(_once(spoken[1]))
        reply.finish()
        self._run(_speak_quietly(session, reply))

    def _run(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro, name="xiaozhi relayed channel")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def _once(pcm: bytes) -> AsyncIterator[bytes]:
    yield pcm


async def _speak_quietly(session: DeviceSession, reply: Reply) -> None:
    with suppress(ConnectionError):
        await session.speak(reply)


def _talks(event: DeviceMessage) -> bool:
    """Whether the user speaks (a `listen start`) or types (a `listen detect` with text)."""
    if not isinstance(event, Listen):
        return False
    return event.state is ListenState.START or (
        event.state is ListenState.DETECT and bool(event.text)
    )


class _RelayedReply:
    """HA's reply to one turn, rebuilt here from its updates and audio, sent by the session."""

    def __init__(self) -> None:
        self.reply = Reply()
        self.audio: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._audio_started = False
        self._audio_ended = False

    def update(self, data: dict[str, Any]) -> None:
        reply = self.reply
        for message in data.get("messages", ()):
            reply.send(server_message_from_dict(message))
        if data.get("speak"):
            reply.start_speaking()
        for text, ready_at in data.get("sentences", ()):
            reply.sentence(str(text), float(ready_at))
        if data.get("has_audio") and not self._audio_started:
            self._audio_started = True
            reply.play(self._audio())
        if data.get("audio_ended") and not self._audio_ended:
            self._audio_ended = True
            self.audio.put_nowait(None)
        if data.get("finished"):
            reply.finish()

    async def _audio(self) -> AsyncIterator[bytes]:
        while (pcm := await self.audio.get()) is not None:
            yield pcm


class _ForwardedTimings(TurnTimings):
    """Marks the session sets here are marked in HA's copy of the turn's timings too."""

    def __init__(self, gate: RelayGate, channel: int, reply: int) -> None:
        super().__init__()
        self._gate = gate
        self._channel = channel
        self._reply = reply

    def mark(self, stage: Stage, at: float) -> None:
        if stage not in self.marks:
            self._gate.send(
                {"type": "mark", "channel": self._channel, "reply": self._reply, "stage": stage}
            )
        super().mark(stage, at)


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) else None
