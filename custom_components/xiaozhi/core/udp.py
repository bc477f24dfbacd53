"""The encrypted UDP audio channel of the MQTT transport (protocol.md §7.3).

Each datagram is a 16-byte header (type 0x01, flags, payload length, ssrc, timestamp, sequence)
and an AES-128-CTR encrypted Opus packet whose initial counter block is that very header. Each
session gets its own key and nonce; the nonce's ssrc (bytes 4-7), which the device copies into
every datagram, routes datagrams to their session. There is no integrity check in the firmware's
format: what can be checked is checked (type, length, sequence, sender), the rest reaches the
Opus decoder, which drops what it cannot decode.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
import logging
import secrets
import struct
from typing import Final

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .const import MAX_OPUS_PACKET_BYTES

_LOGGER = logging.getLogger(__name__)

HEADER_BYTES: Final = 16
KEY_BYTES: Final = 16
PACKET_TYPE_AUDIO: Final = 0x01
MAX_DATAGRAM_BYTES: Final = HEADER_BYTES + MAX_OPUS_PACKET_BYTES
MAX_SEND_DATAGRAM_BYTES: Final = 1500  # the device's receive buffer (esp-ml307 esp_udp.cc)
REPLAY_WINDOW: Final = 64  # sequences below the newest that are told apart as replays
MAX_SEQUENCE: Final = 0xFFFFFFFF
_HEADER: Final = struct.Struct(">BBHIII")


class Drop(StrEnum):
    """Why a datagram was dropped (counted for diagnostics)."""

    SHORT = "short"  # under 16 bytes
    NOT_AUDIO = "not_audio"  # type byte other than 0x01
    LENGTH_MISMATCH = "length_mismatch"  # header length and datagram disagree (truncated, padded)
    TOO_BIG = "too_big"
    UNKNOWN_CHANNEL = "unknown_channel"  # no session has this ssrc
    WRONG_SENDER = "wrong_sender"  # not from the address of the device's MQTT connection
    REPLAYED = "replayed"  # a sequence already received
    OUT_OF_ORDER = "out_of_order"  # older than the newest received, not seen before
    UNDELIVERABLE = "undeliverable"  # (sent) the device has not sent a datagram yet


@dataclass(frozen=True, slots=True)
class AudioHeader:
    """The header of an audio datagram."""

    payload_len: int
    ssrc: int
    timestamp: int
    sequence: int

    @classmethod
    def unpack(cls, datagram: bytes) -> AudioHeader | Drop:
        """Read the header, or say why the datagram is not one the firmware would accept."""
        if len(datagram) < HEADER_BYTES:
            return Drop.SHORT
        kind, _flags, length, ssrc, timestamp, sequence = _HEADER.unpack_from(datagram)
        if kind != PACKET_TYPE_AUDIO:
            return Drop.NOT_AUDIO
        if len(datagram) != HEADER_BYTES + length:
            return Drop.LENGTH_MISMATCH
        return cls(length, ssrc, timestamp, sequence)


def crypt(key: algorithms.AES, header: bytes, data: bytes) -> bytes:
    """AES-128-CTR with the 16-byte header as the initial counter block (both directions)."""
    return Cipher(key, modes.CTR(header)).encryptor().update(data)


def seal(key: algorithms.AES, nonce: bytes, payload: bytes, timestamp: int, sequence: int) -> bytes:
    """Build a datagram: the nonce with length, timestamp and sequence written in, then payload."""
    header = bytearray(nonce)
    struct.pack_into(">H", header, 2, len(payload))
    struct.pack_into(">II", header, 8, timestamp & MAX_SEQUENCE, sequence)
    return bytes(header) + crypt(key, bytes(header), payload)


def new_nonce(ssrc: int) -> bytes:
    """A session nonce: type 0x01, flags 0, length 0, the ssrc, then zeros (as the gateway's)."""
    return _HEADER.pack(PACKET_TYPE_AUDIO, 0, 0, ssrc, 0, 0)


class SequenceWindow:
    """Accepts strictly newer sequences (gaps allowed) and tells replays from late packets."""

    def __init__(self) -> None:
        """Start before sequence 1 (the firmware's first)."""
        self.newest = 0
        self._seen = 0  # bit i: newest - i was received

    def check(self, sequence: int) -> Drop | None:
        """Return why `sequence` is dropped, or None (and record it) if it is accepted."""
        if sequence > self.newest:
            shift = sequence - self.newest
            self._seen = ((self._seen << shift) | 1) & ((1 << REPLAY_WINDOW) - 1)
            self.newest = sequence
            return None
        behind = self.newest - sequence
        if behind < REPLAY_WINDOW and self._seen >> behind & 1:
            return Drop.REPLAYED
        return Drop.OUT_OF_ORDER


class UdpChannel:
    """One session's audio channel: its key and nonce, sequences both ways, the device's address."""

    def __init__(
        self,
        server: UdpAudioServer,
        ssrc: int,
        device_host: str,
        on_audio: Callable[[bytes], None],
    ) -> None:
        """Open a channel that accepts datagrams from `device_host` only."""
        self.server = server
        self.ssrc = ssrc
        self.key = secrets.token_bytes(KEY_BYTES)
        self.nonce = new_nonce(ssrc)
        self.device_host = device_host
        self.device_address: tuple[str, int] | None = None  # learned from its first datagram
        self.received = SequenceWindow()
        self.sent_sequence = 0
        self.packets_received = 0
        self.packets_sent = 0
        self._cipher_key = algorithms.AES(self.key)
        self._on_audio = on_audio
        self.closed = False

    def params(self, server_host: str, port: int) -> dict[str, object]:
        """The `udp` block of the server hello."""
        return {
            "server": server_host,
            "port": port,
            "key": self.key.hex(),
            "nonce": self.nonce.hex(),
            "encryption": "aes-128-ctr",
        }

    def send(self, payload: bytes, timestamp: int) -> None:
        """Encrypt and send one Opus packet to the device (dropped until its address is known)."""
        if self.closed:
            return
        if self.device_address is None:
            self.server.count(Drop.UNDELIVERABLE, self)
            return
        self.sent_sequence = (self.sent_sequence % MAX_SEQUENCE) + 1
        datagram = seal(self._cipher_key, self.nonce, payload, timestamp, self.sent_sequence)
        self.packets_sent += 1
        self.server.sendto(datagram, self.device_address)

    def receive(self, header: AudioHeader, datagram: bytes, address: tuple[str, int]) -> None:
        """Decrypt an accepted datagram and hand its Opus packet on."""
        if _host(address) != self.device_host:
            self.server.count(Drop.WRONG_SENDER, self)
            return
        if (drop := self.received.check(header.sequence)) is not None:
            self.server.count(drop, self)
            return
        self.device_address = address
        self.packets_received += 1
        self._on_audio(crypt(self._cipher_key, datagram[:HEADER_BYTES], datagram[HEADER_BYTES:]))

    def close(self) -> None:
        """Stop routing datagrams to this channel."""
        self.closed = True
        self.server.remove(self)


def _host(address: tuple[str, int] | tuple[str, int, int, int]) -> str:
    host = address[0]
    return host.removeprefix("::ffff:")


class UdpAudioServer(asyncio.DatagramProtocol):
    """The UDP socket every audio channel shares, routing datagrams by ssrc."""

    def __init__(self) -> None:
        """Create the server; `async_start` binds it."""
        self.channels: dict[int, UdpChannel] = {}
        self.drops: Counter[Drop] = Counter()
        self._transport: asyncio.DatagramTransport | None = None
        self._warned: set[tuple[int, Drop]] = set()

    async def async_start(self, host: str, port: int) -> None:
        """Bind the socket; raises `OSError` if the port is taken."""
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=(host, port)
        )

    @property
    def port(self) -> int | None:
        """The bound port (tests bind port 0)."""
        if self._transport is None:
            return None
        port: int = self._transport.get_extra_info("sockname")[1]
        return port

    def open_channel(self, device_host: str, on_audio: Callable[[bytes], None]) -> UdpChannel:
        """Open a channel with a fresh key and an unused ssrc."""
        while (ssrc := secrets.randbits(32)) in self.channels or not ssrc:
            pass
        channel = UdpChannel(self, ssrc, _host((device_host, 0)), on_audio)
        self.channels[ssrc] = channel
        return channel

    def remove(self, channel: UdpChannel) -> None:
        """Forget a closed channel."""
        if self.channels.get(channel.ssrc) is channel:
            del self.channels[channel.ssrc]
            self._warned = {key for key in self._warned if key[0] != channel.ssrc}

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        """Route one datagram to its channel, or count why it was dropped."""
        if len(data) > MAX_DATAGRAM_BYTES:
            self.count(Drop.TOO_BIG)
            return
        header = AudioHeader.unpack(data)
        if isinstance(header, Drop):
            self.count(header)
            return
        channel = self.channels.get(header.ssrc)
        if channel is None:
            self.count(Drop.UNKNOWN_CHANNEL)
            return
        channel.receive(header, data, addr)

    def error_received(self, exc: Exception) -> None:
        """An ICMP error for an earlier send (a device gone); the channel's timeout handles it."""
        _LOGGER.debug("UDP audio: %s", exc)

    def count(self, drop: Drop, channel: UdpChannel | None = None) -> None:
        """Count a dropped datagram; warn once per channel and reason."""
        self.drops[drop] += 1
        if channel is not None and (channel.ssrc, drop) not in self._warned:
            self._warned.add((channel.ssrc, drop))
            _LOGGER.warning(
                "UDP audio channel %08x: dropping datagrams (%s)", channel.ssrc, drop.value
            )

    def sendto(self, datagram: bytes, address: tuple[str, int]) -> None:
        """Send a datagram (silently dropped once the socket is closed)."""
        if self._transport is not None and not self._transport.is_closing():
            self._transport.sendto(datagram, address)

    def close(self) -> None:
        """Close the socket and every channel."""
        for channel in list(self.channels.values()):
            channel.close()
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        self._warned.clear()

    def stats(self) -> dict[str, object]:
        """Counters for diagnostics."""
        return {
            "channels": len(self.channels),
            "dropped": {drop.value: self.drops[drop] for drop in Drop},
        }
