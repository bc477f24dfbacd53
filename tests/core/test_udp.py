"""The UDP audio format: the firmware's header-as-IV AES-CTR, sequences, drops."""

from __future__ import annotations

import struct

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from custom_components.xiaozhi.core.udp import (
    AudioHeader,
    Drop,
    SequenceWindow,
    UdpAudioServer,
    new_nonce,
    seal,
)

KEY = bytes(range(16))


def firmware_decrypt(datagram: bytes) -> bytes:
    """What mqtt_protocol.cc does: the 16-byte header is the initial counter block."""
    header = datagram[:16]
    return Cipher(algorithms.AES(KEY), modes.CTR(header)).decryptor().update(datagram[16:])


def test_seal_matches_the_firmware() -> None:
    nonce = new_nonce(0x12345678)
    assert nonce.hex() == "0100000012345678" + "0" * 16  # type, flags, length, ssrc, zeros
    payload = bytes(range(200))  # over one AES block: the counter increments across blocks
    datagram = seal(algorithms.AES(KEY), nonce, payload, timestamp=99, sequence=3)
    assert struct.unpack(">BBHIII", datagram[:16]) == (1, 0, 200, 0x12345678, 99, 3)
    assert firmware_decrypt(datagram) == payload
    assert AudioHeader.unpack(datagram) == AudioHeader(200, 0x12345678, 99, 3)


def test_header_checks() -> None:
    datagram = seal(algorithms.AES(KEY), new_nonce(1), b"abc", 0, 1)
    assert AudioHeader.unpack(datagram[:15]) is Drop.SHORT
    assert AudioHeader.unpack(b"\x02" + datagram[1:]) is Drop.NOT_AUDIO
    assert AudioHeader.unpack(datagram[:-1]) is Drop.LENGTH_MISMATCH
    assert AudioHeader.unpack(datagram + b"x") is Drop.LENGTH_MISMATCH


def test_sequence_window() -> None:
    window = SequenceWindow()
    assert window.check(0) is Drop.OUT_OF_ORDER  # the firmware starts at 1
    assert window.check(1) is None
    assert window.check(3) is None  # a gap is accepted
    assert window.check(3) is Drop.REPLAYED
    assert window.check(1) is Drop.REPLAYED
    assert window.check(2) is Drop.OUT_OF_ORDER  # late: never seen, but older than the newest
    assert window.check(1000) is None
    assert window.check(3) is Drop.OUT_OF_ORDER  # beyond the window: late either way


def test_channel_routing_and_counts() -> None:
    server = UdpAudioServer()
    received: list[bytes] = []
    channel = server.open_channel("127.0.0.1", received.append)
    cipher = algorithms.AES(channel.key)
    good = seal(cipher, channel.nonce, b"opus", 0, 1)
    server.datagram_received(good, ("127.0.0.1", 5000))
    server.datagram_received(good, ("127.0.0.1", 5000))
    server.datagram_received(seal(cipher, channel.nonce, b"opus", 0, 2), ("10.0.0.9", 5000))
    server.datagram_received(seal(cipher, new_nonce(channel.ssrc ^ 1), b"x", 0, 5), ("x", 1))
    assert received == [b"opus"]
    assert channel.device_address == ("127.0.0.1", 5000)
    assert server.drops == {Drop.REPLAYED: 1, Drop.WRONG_SENDER: 1, Drop.UNKNOWN_CHANNEL: 1}
    channel.close()
    assert server.channels == {}
