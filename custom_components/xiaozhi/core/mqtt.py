"""The MQTT 3.1.1 packets a xiaozhi device uses, read and written (protocol.md §7).

The firmware's client (ESP-IDF `esp-mqtt`, or a modem's) sends CONNECT, PUBLISH at QoS 0,
PINGREQ and DISCONNECT, and never SUBSCRIBEs. This codec reads those (plus QoS 1 PUBLISH and
SUBSCRIBE/UNSUBSCRIBE from other clients, answered and otherwise ignored) and writes CONNACK,
PUBLISH at QoS 0, PUBACK, SUBACK, UNSUBACK and PINGRESP. Anything else is a `MqttError`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from .errors import MessageTooBigError, ProtocolError

MAX_REMAINING_LENGTH_BYTES: Final = 4  # the spec's limit (268,435,455 bytes)
PROTOCOL_NAME: Final = b"MQTT"
PROTOCOL_LEVEL: Final = 4  # 3.1.1
LEGACY_PROTOCOL_NAME: Final = b"MQIsdp"  # 3.1, which some modem firmwares still speak
LEGACY_PROTOCOL_LEVEL: Final = 3


class MqttError(ProtocolError):
    """A packet that breaks MQTT 3.1.1, or one this server does not take."""


class PacketType(IntEnum):
    """The control packet types (the high nibble of the first byte)."""

    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    SUBSCRIBE = 8
    SUBACK = 9
    UNSUBSCRIBE = 10
    UNSUBACK = 11
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14


class ConnectReturnCode(IntEnum):
    """CONNACK return codes."""

    ACCEPTED = 0
    UNACCEPTABLE_PROTOCOL = 1
    IDENTIFIER_REJECTED = 2
    SERVER_UNAVAILABLE = 3
    BAD_CREDENTIALS = 4
    NOT_AUTHORIZED = 5


@dataclass(frozen=True, slots=True)
class Packet:
    """One control packet as read: its type, the low nibble of the first byte, and its body."""

    type: PacketType
    flags: int
    body: bytes


@dataclass(frozen=True, slots=True, repr=False)
class Connect:
    """What a client says when it connects (the password is never shown in a repr)."""

    client_id: str
    username: str | None
    password: str | None
    keepalive_s: int
    protocol_level: int

    def __repr__(self) -> str:
        """Name the client, not its secret."""
        return f"Connect(client_id={self.client_id!r}, username={self.username!r})"


@dataclass(frozen=True, slots=True)
class Publish:
    """An application message."""

    topic: str
    payload: bytes
    qos: int = 0
    packet_id: int | None = None


# --- reading -------------------------------------------------------------------------------------


async def read_packet(reader: asyncio.StreamReader, max_bytes: int) -> Packet:
    """Read one packet; raise `MqttError` for a bad header, `MessageTooBigError` over `max_bytes`.

    Raises `asyncio.IncompleteReadError` when the stream ends (mid-packet or between packets).
    """
    first = (await reader.readexactly(1))[0]
    length = 0
    for index in range(MAX_REMAINING_LENGTH_BYTES):
        byte = (await reader.readexactly(1))[0]
        length |= (byte & 0x7F) << (7 * index)
        if not byte & 0x80:
            break
    else:
        raise MqttError("remaining length longer than 4 bytes")
    if length > max_bytes:
        raise MessageTooBigError(f"MQTT packet of {length} bytes exceeds {max_bytes}")
    body = await reader.readexactly(length) if length else b""
    return decode_header(first, body)


def decode_header(first: int, body: bytes) -> Packet:
    """Check a packet's type and fixed-header flags (MQTT 3.1.1 §2.2.2)."""
    try:
        kind = PacketType(first >> 4)
    except ValueError:
        raise MqttError(f"packet type {first >> 4} is not served") from None
    flags = first & 0x0F
    if kind is PacketType.PUBLISH:
        if (flags >> 1) & 0x03 == 3:
            raise MqttError("PUBLISH with QoS 3")
    elif kind in (PacketType.SUBSCRIBE, PacketType.UNSUBSCRIBE):
        if flags != 0x02:
            raise MqttError(f"{kind.name} with flags {flags:#x}")
    elif flags:
        raise MqttError(f"{kind.name} with flags {flags:#x}")
    return Packet(kind, flags, body)


class _Reader:
    """Reads the fields of a packet body, raising `MqttError` when it runs short."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.pos = 0

    def u8(self) -> int:
        if self.pos + 1 > len(self.body):
            raise MqttError("packet ends inside a field")
        self.pos += 1
        return self.body[self.pos - 1]

    def u16(self) -> int:
        return (self.u8() << 8) | self.u8()

    def binary(self) -> bytes:
        size = self.u16()
        if self.pos + size > len(self.body):
            raise MqttError("packet ends inside a field")
        self.pos += size
        return self.body[self.pos - size : self.pos]

    def text(self) -> str:
        raw = self.binary()
        try:
            value = raw.decode()
        except UnicodeDecodeError:
            raise MqttError("string is not UTF-8") from None
        if "\0" in value:
            raise MqttError("string holds U+0000")
        return value

    def rest(self) -> bytes:
        value = self.body[self.pos :]
        self.pos = len(self.body)
        return value

    def done(self) -> None:
        if self.pos != len(self.body):
            raise MqttError("bytes after the last field")


def parse_connect(body: bytes) -> Connect:
    """Read a CONNECT body; a protocol other than 3.1.1 or 3.1 raises `UnsupportedProtocolError`."""
    fields = _Reader(body)
    name = fields.binary()
    level = fields.u8()
    if (name, level) not in (
        (PROTOCOL_NAME, PROTOCOL_LEVEL),
        (LEGACY_PROTOCOL_NAME, LEGACY_PROTOCOL_LEVEL),
    ):
        raise UnsupportedProtocolError(f"protocol {name[:8]!r} level {level}")
    flags = fields.u8()
    if flags & 0x01:
        raise MqttError("CONNECT reserved flag set")
    keepalive = fields.u16()
    client_id = fields.text()
    if flags & 0x04:  # will flag: topic and message (accepted, never published)
        fields.text()
        fields.binary()
    elif flags & 0x38:
        raise MqttError("will QoS or retain without a will")
    username = fields.text() if flags & 0x80 else None
    password: str | None = None
    if flags & 0x40:
        try:
            password = fields.binary().decode()
        except UnicodeDecodeError:
            raise MqttError("password is not UTF-8") from None
    fields.done()
    return Connect(client_id, username, password, keepalive, level)


class UnsupportedProtocolError(MqttError):
    """A CONNECT for another MQTT version: answered with return code 1, then closed."""


def parse_publish(packet: Packet) -> Publish:
    """Read a PUBLISH."""
    qos = (packet.flags >> 1) & 0x03
    fields = _Reader(packet.body)
    topic = fields.text()
    if not topic or "+" in topic or "#" in topic:
        raise MqttError("PUBLISH topic empty or with a wildcard")
    packet_id = fields.u16() if qos else None
    if packet_id == 0:
        raise MqttError("packet identifier 0")
    return Publish(topic, fields.rest(), qos, packet_id)


def parse_subscription(packet: Packet) -> tuple[int, int]:
    """Read a SUBSCRIBE or UNSUBSCRIBE: its packet id and how many topic filters it holds."""
    fields = _Reader(packet.body)
    packet_id = fields.u16()
    count = 0
    while fields.pos < len(fields.body):
        fields.text()
        if packet.type is PacketType.SUBSCRIBE and fields.u8() > 2:
            raise MqttError("requested QoS above 2")
        count += 1
    if not count:
        raise MqttError(f"{packet.type.name} without a topic filter")
    return packet_id, count


# --- writing -------------------------------------------------------------------------------------


def _remaining_length(length: int) -> bytes:
    out = bytearray()
    while True:
        byte, length = length & 0x7F, length >> 7
        out.append(byte | (0x80 if length else 0))
        if not length:
            return bytes(out)


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + _remaining_length(len(body)) + body


def _text(value: str) -> bytes:
    raw = value.encode()
    return len(raw).to_bytes(2, "big") + raw


def connack(code: ConnectReturnCode) -> bytes:
    """A CONNACK (never a present session: the server keeps none)."""
    return _packet(PacketType.CONNACK << 4, bytes([0, code]))


def publish(topic: str, payload: bytes) -> bytes:
    """A PUBLISH at QoS 0, not retained."""
    return _packet(PacketType.PUBLISH << 4, _text(topic) + payload)


def puback(packet_id: int) -> bytes:
    """Acknowledge a QoS 1 PUBLISH."""
    return _packet(PacketType.PUBACK << 4, packet_id.to_bytes(2, "big"))


def suback(packet_id: int, count: int) -> bytes:
    """Grant QoS 0 to every filter of a SUBSCRIBE (the server publishes regardless)."""
    return _packet(PacketType.SUBACK << 4, packet_id.to_bytes(2, "big") + bytes(count))


def unsuback(packet_id: int) -> bytes:
    """Acknowledge an UNSUBSCRIBE."""
    return _packet(PacketType.UNSUBACK << 4, packet_id.to_bytes(2, "big"))


def pingresp() -> bytes:
    """Answer a PINGREQ."""
    return _packet(PacketType.PINGRESP << 4, b"")


def connect(client_id: str, username: str | None, password: str | None, keepalive_s: int) -> bytes:
    """A CONNECT as a device sends it (tests and the fuzzer write their own with this)."""
    flags = 0x02 | (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    body = _text(PROTOCOL_NAME.decode()) + bytes([PROTOCOL_LEVEL, flags])
    body += keepalive_s.to_bytes(2, "big") + _text(client_id)
    if username is not None:
        body += _text(username)
    if password is not None:
        body += _text(password)
    return _packet(PacketType.CONNECT << 4, body)
