"""Tests for binary audio framing, protocol versions 1-3."""

from __future__ import annotations

import struct

import pytest

from custom_components.xiaozhi.core import framing
from custom_components.xiaozhi.core.const import MAX_OPUS_PACKET_BYTES
from custom_components.xiaozhi.core.errors import FramingError, MessageTooBigError

PACKET = bytes(range(200))


def test_v1_is_the_bare_packet() -> None:
    assert framing.pack(1, PACKET) == PACKET
    assert framing.unpack(1, PACKET).payload == PACKET


def test_v2_header_layout() -> None:
    frame = framing.pack(2, PACKET, timestamp=123456)
    assert frame[:16] == struct.pack(">HHIII", 2, 0, 0, 123456, len(PACKET))
    unpacked = framing.unpack(2, frame)
    assert unpacked.payload == PACKET
    assert unpacked.timestamp == 123456


def test_v3_header_layout() -> None:
    frame = framing.pack(3, PACKET)
    assert frame[:4] == struct.pack(">BBH", 0, 0, len(PACKET))
    assert framing.unpack(3, frame).payload == PACKET


@pytest.mark.parametrize("version", [2, 3])
def test_truncated_header(version: int) -> None:
    with pytest.raises(FramingError, match="shorter than"):
        framing.unpack(version, b"\x00\x02\x00")


@pytest.mark.parametrize("version", [2, 3])
def test_length_field_must_match(version: int) -> None:
    frame = framing.pack(version, PACKET)
    with pytest.raises(FramingError, match="header says"):
        framing.unpack(version, frame[:-1])
    with pytest.raises(FramingError, match="header says"):
        framing.unpack(version, frame + b"\x00")


def test_non_audio_type_rejected() -> None:
    frame = struct.pack(">BBH", 1, 0, len(PACKET)) + PACKET
    with pytest.raises(FramingError, match="type 1"):
        framing.unpack(3, frame)


@pytest.mark.parametrize("version", [1, 2, 3])
def test_oversized_packet(version: int) -> None:
    big = b"\x00" * (MAX_OPUS_PACKET_BYTES + 1)
    with pytest.raises(MessageTooBigError):
        framing.pack(version, big)
    header = {
        1: b"",
        2: struct.pack(">HHIII", 2, 0, 0, 0, len(big)),
        3: struct.pack(">BBH", 0, 0, len(big)),
    }[version]
    with pytest.raises(MessageTooBigError):
        framing.unpack(version, header + big)


def test_unknown_version() -> None:
    with pytest.raises(FramingError):
        framing.check_version(4)
    with pytest.raises(FramingError):
        framing.unpack(0, PACKET)
