"""The always-connected transport: an MQTT server for JSON and UDP for audio (protocol.md §7).

A device keeps one MQTT connection (a `DeviceConnection`) from boot on. Its hello opens a
`DeviceSession` over an `MqttUdpLink` (JSON over MQTT, audio in AES-CTR UDP datagrams); a
goodbye from either side ends that session, never the connection, and the next hello opens the
next one. Between sessions the host reaches the device through its connection (`send`), and
messages the device sends then (MCP answers) go to the connection's handler.

The firmware never SUBSCRIBEs: the server publishes to each device's connection whatever the
subscriptions, which is why this is a small server of its own and not a general broker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
import contextlib
import json
import logging
from typing import Any

from . import mqtt
from .const import (
    CLOSE_TIMEOUT_S,
    MAX_CHANNELS_PER_ADDRESS,
    MAX_CONNECTIONS,
    MAX_MQTT_KEEPALIVE_S,
    MAX_MQTT_PACKET_BURST,
    MAX_MQTT_PACKET_BYTES,
    MAX_MQTT_PACKETS_PER_S,
    MQTT_CONNECT_TIMEOUT_S,
    MQTT_DEVICE_TOPIC,
    MQTT_KEEPALIVE_GRACE,
    MQTT_KEEPALIVE_S,
    MQTT_SEND_TIMEOUT_S,
    CloseCode,
)
from .errors import OtaRequestError, ProtocolError
from .host import ConnectionHandler, DeviceGate
from .messages import Goodbye, Message, load_json_object, parse_device_message
from .mqtt import ConnectReturnCode, PacketType
from .ota import normalize_device_id
from .session import DeviceIdentity, DeviceSession, RateLimit, SessionState
from .udp import UdpAudioServer, UdpChannel

_LOGGER = logging.getLogger(__name__)

# Messages a device sends only inside a session: without one it believes in a channel we closed.
SESSION_ONLY_TYPES = frozenset({"listen", "abort"})


def device_topic(device_id: str) -> str:
    """The topic the server publishes a device's messages on (the device reads any topic)."""
    return MQTT_DEVICE_TOPIC.format(device_id.replace(":", "_"))


class MqttUdpLink:
    """A `DeviceLink` for one session: JSON over the device's MQTT connection, audio over UDP."""

    def __init__(self, connection: DeviceConnection, channel: UdpChannel) -> None:
        """Carry one session on `connection`, its audio on `channel`."""
        self.connection = connection
        self.channel = channel
        self.device_left = False  # the device ended the session itself: no goodbye back
        self._closed = False
        self._hello_sent = False

    @property
    def closed(self) -> bool:
        """Whether the session's channel is gone (ended, or the MQTT connection dropped)."""
        return self._closed or not self.connection.connected

    async def send_text(self, text: str) -> None:
        """Publish one JSON message; the server hello gets the UDP channel's parameters.

        The session writes the hello every transport shares; this transport adds its own part
        (`transport: udp` and the `udp` block the firmware requires, protocol.md §7.2).
        """
        if not self._hello_sent:
            self._hello_sent = True
            hello = json.loads(text)
            if hello.get("type") == "hello":
                hello["transport"] = "udp"
                hello["udp"] = self.channel.params(
                    self.connection.server_host, self.connection.server.udp_port
                )
                text = json.dumps(hello, ensure_ascii=False, separators=(",", ":"))
        await self.connection.send_text(text)

    async def send_audio(self, packet: bytes, timestamp: int) -> None:
        """Send one Opus packet as an encrypted datagram."""
        self.channel.send(packet, timestamp)

    async def close(self, code: CloseCode, reason: str) -> None:
        """End the session: close its audio channel and, unless the device left, say goodbye."""
        if self._closed:
            return
        self._closed = True
        self.channel.close()
        session = self.connection.session
        if session is not None and session.link is self:
            self.connection.session = None
            if not self.device_left and self.connection.connected:
                _LOGGER.debug("%s: goodbye (%s: %s)", session, code.name, reason)
                await self.connection.send_text(Goodbye(session.session_id).to_json())

    def drop(self) -> None:
        """The MQTT connection is gone: nothing more can be sent."""
        self._closed = True
        self.channel.close()


class DeviceConnection:
    """One always-connected device: its MQTT connection and the session open on it, if any."""

    def __init__(
        self,
        server: MqttUdpServer,
        identity: DeviceIdentity,
        handler: ConnectionHandler,
        writer: asyncio.StreamWriter,
    ) -> None:
        """Serve an authenticated device."""
        self.server = server
        self.identity = identity
        self.handler = handler
        self.topic = device_topic(identity.device_id)
        self.session: DeviceSession | None = None
        self.connected = True
        self.sessions_opened = 0
        self._writer = writer
        sockname = writer.get_extra_info("sockname")
        self.server_host = str(sockname[0]).removeprefix("::ffff:") if sockname else ""
        self._warned: set[str] = set()

    def __repr__(self) -> str:
        """Name the device in logs."""
        return f"<DeviceConnection {self.identity.device_id}>"

    @property
    def device_id(self) -> str:
        """The device's MAC."""
        return self.identity.device_id

    # --- output ----------------------------------------------------------------------------------

    async def send(self, message: Message) -> None:
        """Send one JSON message now, in a session or between sessions.

        Inside a session it carries the session id, as the session's own messages do.
        """
        session_id = self.session.session_id if self.session is not None else None
        await self.send_text(message.to_json(session_id=session_id))

    async def send_text(self, text: str) -> None:
        """Publish JSON text to the device (dropped once the connection is closed)."""
        if not self.connected:
            return
        self._writer.write(mqtt.publish(self.topic, text.encode()))
        await self._drain()

    async def write_packet(self, packet: bytes) -> None:
        """Send one MQTT control packet (an acknowledgement)."""
        if self.connected:
            self._writer.write(packet)
            await self._drain()

    async def _drain(self) -> None:
        try:
            async with asyncio.timeout(MQTT_SEND_TIMEOUT_S):
                await self._writer.drain()
        except TimeoutError:
            _LOGGER.warning("%s: not reading for %.0f s, dropped", self, MQTT_SEND_TIMEOUT_S)
            self._abort()
        except ConnectionError:
            self._abort()

    def _abort(self) -> None:
        self.connected = False
        self._writer.transport.abort()

    async def close(self, reason: str) -> None:
        """Close the MQTT connection (the device reconnects on its own 60 s timer)."""
        _LOGGER.debug("%s: closing (%s)", self, reason)
        self.connected = False
        self._writer.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self._writer.wait_closed()

    # --- input -----------------------------------------------------------------------------------

    async def handle_publish(self, payload: bytes) -> None:
        """Route a JSON message: a hello opens a session; the rest go to it, or to the handler."""
        try:
            kind = load_json_object(payload).get("type")
        except ProtocolError as err:
            self._warn_once("json", "%s: dropping a message: %s", self, err)
            return
        if kind == "hello":
            await self._open_session(payload)
            return
        session = self.session
        if session is not None:
            if kind == "goodbye" and isinstance(session.link, MqttUdpLink):
                session.link.device_left = True
            try:
                await session.handle_text(payload)
            except ProtocolError as err:
                _LOGGER.warning("Closing %s: %s", session, err)
                await session.close(err.close_code, str(err))
            return
        await self._between_sessions(kind, payload)

    async def _between_sessions(self, kind: object, payload: bytes) -> None:
        if kind == "goodbye":
            return  # the device ended a session we had already closed
        if isinstance(kind, str) and kind in SESSION_ONLY_TYPES:
            # It believes in a session we no longer have (HA restarted): end it on its side.
            session_id = load_json_object(payload).get("session_id")
            self._warn_once("stale", "%s: '%s' without a session; ending it", self, kind)
            if isinstance(session_id, str):
                await self.send_text(Goodbye(session_id).to_json())
            return
        try:
            message = parse_device_message(payload)
        except ProtocolError as err:
            self._warn_once("message", "%s: dropping a message: %s", self, err)
            return
        self.handler.message_received(self, message)

    async def _open_session(self, hello: bytes) -> None:
        """A hello: the device opens a new audio channel (it forgot any earlier one)."""
        if (previous := self.session) is not None and isinstance(previous.link, MqttUdpLink):
            previous.link.device_left = True  # it cleared that session id: no goodbye
            await previous.close(CloseCode.REPLACED, "a new hello")

        def audio(packet: bytes) -> None:
            self.server.audio_received(session, packet)

        channel = self.server.udp.open_channel(self.identity.remote or "", audio)
        link = MqttUdpLink(self, channel)
        session = DeviceSession(
            link,
            self.identity,
            self.handler.session_handler(),
            microphone_offload=self.server.gate.microphones,
        )
        self.session = session
        self.sessions_opened += 1
        session.start()
        try:
            await session.handle_text(hello)
        except ProtocolError as err:
            _LOGGER.warning("Closing %s: %s", session, err)
            await session.close(err.close_code, str(err))

    def end_sessions(self) -> None:
        """The connection is gone: its session ends with it."""
        self.connected = False
        if (session := self.session) is not None:
            if isinstance(session.link, MqttUdpLink):
                session.link.drop()
            self.session = None
            session.finish()

    def _warn_once(self, key: str, msg: str, *args: object) -> None:
        level = logging.DEBUG if key in self._warned else logging.WARNING
        self._warned.add(key)
        _LOGGER.log(level, msg, *args)


class MqttUdpServer:
    """Serves always-connected devices: the MQTT listener, the UDP socket, one connection each."""

    def __init__(self, gate: DeviceGate, *, keepalive_s: int = MQTT_KEEPALIVE_S) -> None:
        """Serve the devices `gate` lets in; `async_start` opens the ports."""
        self.gate = gate
        self.keepalive_s = keepalive_s
        self.udp = UdpAudioServer()
        self.connections: dict[str, DeviceConnection] = {}
        self.refused = 0
        self._server: asyncio.Server | None = None
        self._by_address: dict[str | None, int] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False

    @property
    def sessions(self) -> set[DeviceSession]:
        """The sessions open on the connections."""
        return {c.session for c in self.connections.values() if c.session is not None}

    @property
    def running(self) -> bool:
        """Whether the listeners are open."""
        return self._server is not None

    @property
    def mqtt_port(self) -> int:
        """The bound MQTT port."""
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def udp_port(self) -> int:
        """The bound UDP port."""
        return self.udp.port or 0

    async def async_start(self, host: str | None, mqtt_port: int, udp_port: int) -> None:
        """Open both ports; raises `OSError` (and opens neither) if one is taken."""
        self._closing = False
        await self.udp.async_start(host or "0.0.0.0", udp_port)
        try:
            self._server = await asyncio.start_server(
                self._serve_client, host, mqtt_port, limit=MAX_MQTT_PACKET_BYTES
            )
        except OSError:
            self.udp.close()
            raise
        _LOGGER.info(
            "Always-connected devices: MQTT on TCP %d, audio on UDP %d",
            self.mqtt_port,
            self.udp_port,
        )

    async def async_close(self) -> None:
        """Close the listeners, every connection and every session."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        connections = list(self.connections.values())
        for connection in connections:
            if (session := connection.session) is not None:
                await session.close(CloseCode.GOING_AWAY, "server unloading")
        await asyncio.gather(
            *(c.close("server unloading") for c in connections), return_exceptions=True
        )
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=CLOSE_TIMEOUT_S)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await self._server.wait_closed()
            self._server = None
        self.udp.close()

    def stats(self) -> dict[str, object]:
        """Counters for diagnostics."""
        return {
            "connections": len(self.connections),
            "sessions": len(self.sessions),
            "refused_connections": self.refused,
            "udp": self.udp.stats(),
        }

    # --- one client ------------------------------------------------------------------------------

    async def _serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        peer = writer.get_extra_info("peername")
        remote = str(peer[0]).removeprefix("::ffff:") if peer else None
        if self._closing or self._by_address.get(remote, 0) >= MAX_CHANNELS_PER_ADDRESS:
            _LOGGER.warning("Refused MQTT connection from %s: too many from one address", remote)
            self.refused += 1
            writer.transport.abort()
            return
        self._by_address[remote] = self._by_address.get(remote, 0) + 1
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await self._serve(reader, writer, remote)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the device went away
        except ProtocolError as err:
            _LOGGER.warning("Closing MQTT connection from %s: %s", remote, err)
        except Exception:
            _LOGGER.exception("Unexpected error serving MQTT connection from %s", remote)
        finally:
            if task is not None:
                self._tasks.discard(task)
            count = self._by_address[remote] - 1
            if count:
                self._by_address[remote] = count
            else:
                del self._by_address[remote]
            writer.transport.abort()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, remote: str | None
    ) -> None:
        try:
            async with asyncio.timeout(MQTT_CONNECT_TIMEOUT_S):
                packet = await mqtt.read_packet(reader, MAX_MQTT_PACKET_BYTES)
        except TimeoutError:
            _LOGGER.warning("Closing MQTT connection from %s: no CONNECT in time", remote)
            return
        if packet.type is not PacketType.CONNECT:
            raise mqtt.MqttError(f"{packet.type.name} before CONNECT")
        try:
            hello = mqtt.parse_connect(packet.body)
        except mqtt.UnsupportedProtocolError as err:
            _LOGGER.warning("Refused MQTT connection from %s: %s", remote, err)
            writer.write(mqtt.connack(ConnectReturnCode.UNACCEPTABLE_PROTOCOL))
            return
        connection = await self._authenticate(hello, writer, remote)
        if connection is None:
            return
        try:
            await self._run(connection, reader, hello.keepalive_s)
        finally:
            connection.end_sessions()
            if self.connections.get(connection.device_id) is connection:
                del self.connections[connection.device_id]
            connection.handler.connection_changed(connection)

    async def _authenticate(
        self, hello: mqtt.Connect, writer: asyncio.StreamWriter, remote: str | None
    ) -> DeviceConnection | None:
        """Check the CONNECT's credentials (username: MAC, client id: Client-Id, password)."""
        try:
            identity = DeviceIdentity(
                device_id=normalize_device_id(hello.username),
                client_id=hello.client_id or None,
                remote=remote,
            )
        except OtaRequestError:
            identity = None
        handler = None
        if identity is not None:
            handler = await self.gate.open_connection(identity, hello.password)
        if handler is None or identity is None:
            _LOGGER.warning("Refused MQTT connection from %s: bad credentials", remote)
            self.refused += 1
            writer.write(mqtt.connack(ConnectReturnCode.BAD_CREDENTIALS))
            return None
        if identity.device_id not in self.connections and len(self.connections) >= MAX_CONNECTIONS:
            _LOGGER.warning("Refused device %s: %d devices connected", identity, MAX_CONNECTIONS)
            self.refused += 1
            writer.write(mqtt.connack(ConnectReturnCode.SERVER_UNAVAILABLE))
            return None
        # One connection per device, race-free: the newest registers before anything awaits.
        connection = DeviceConnection(self, identity, handler, writer)
        previous = self.connections.get(identity.device_id)
        self.connections[identity.device_id] = connection
        writer.write(mqtt.connack(ConnectReturnCode.ACCEPTED))
        if previous is not None:
            _LOGGER.info("%s: a new connection replaces the old one", connection)
            previous.end_sessions()
            await previous.close("replaced by a new connection")
        _LOGGER.debug("%s connected from %s", connection, remote)
        handler.connection_changed(connection)
        return connection

    async def _run(
        self, connection: DeviceConnection, reader: asyncio.StreamReader, keepalive_s: int
    ) -> None:
        """Serve packets until the device disconnects, goes silent or breaks the protocol."""
        keepalive = min(keepalive_s or MAX_MQTT_KEEPALIVE_S, MAX_MQTT_KEEPALIVE_S)
        silence_s = keepalive * MQTT_KEEPALIVE_GRACE
        loop = asyncio.get_running_loop()
        limit = RateLimit(MAX_MQTT_PACKETS_PER_S, MAX_MQTT_PACKET_BURST, loop.time)
        while connection.connected:
            try:
                async with asyncio.timeout(silence_s):
                    packet = await mqtt.read_packet(reader, MAX_MQTT_PACKET_BYTES)
            except TimeoutError:
                _LOGGER.info("%s: silent for %.0f s, closing", connection, silence_s)
                return
            if not limit.allow():
                _LOGGER.warning(
                    "Closing %s: more than %.0f packets/s", connection, MAX_MQTT_PACKETS_PER_S
                )
                return
            match packet.type:
                case PacketType.PUBLISH:
                    publish = mqtt.parse_publish(packet)
                    if publish.packet_id is not None:
                        await connection.write_packet(mqtt.puback(publish.packet_id))
                    await connection.handle_publish(publish.payload)
                case PacketType.PINGREQ:
                    await connection.write_packet(mqtt.pingresp())
                case PacketType.SUBSCRIBE:
                    packet_id, count = mqtt.parse_subscription(packet)
                    await connection.write_packet(mqtt.suback(packet_id, count))
                case PacketType.UNSUBSCRIBE:
                    packet_id, _ = mqtt.parse_subscription(packet)
                    await connection.write_packet(mqtt.unsuback(packet_id))
                case PacketType.DISCONNECT:
                    return
                case _:
                    raise mqtt.MqttError(f"unexpected {packet.type.name}")

    # --- audio -----------------------------------------------------------------------------------

    def audio_received(self, session: DeviceSession, packet: bytes) -> None:
        """Hand one microphone packet to its session; a broken rule ends the session."""
        if session.state is SessionState.CLOSED or not session.ready:
            return
        try:
            session.handle_audio(packet)
        except ProtocolError as err:
            _LOGGER.warning("Closing %s: %s", session, err)
            self._background(session.close(err.close_code, str(err)))

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
