"""Binary audio framing for protocol versions 1, 2 and 3 (protocol.md §3.4).

Both directions use the version the OTA answer gave the device. Version 1 is a bare Opus packet;
version 2 adds a 16-byte header with a timestamp; version 3 a 4-byte header. The firmware trusts
the length field blindly, so we always write it exactly and check it strictly on the way in.
"""

from __future__ import annotations

from dataclasses import dataclass
import struct
from typing import Final

from .const import MAX_OPUS_PACKET_BYTES, PROTOCOL_VERSIONS
from .errors import FramingError, MessageTooBigError

AUDIO_FRAME_TYPE: Final = 0
_V2_HEADER = struct.Struct(">HHIII")  # version, type, reserved, timestamp (ms), payload size
_V3_HEADER = struct.Struct(">BBH")  # type, reserved, payload size
HEADER_SIZES: Final = {1: 0, 2: _V2_HEADER.size, 3: _V3_HEADER.size}


@dataclass(frozen=True, slots=True)
class AudioFrame:
    """One Opus packet and, in version 2, its timestamp in milliseconds."""

    payload: bytes
    timestamp: int = 0


def check_version(version: int) -> int:
    """Return `version` if it is a binary protocol version we speak."""
    if version not in PROTOCOL_VERSIONS:
        raise FramingError(f"unsupported binary protocol version {version}")
    return version


def pack(version: int, payload: bytes, timestamp: int = 0) -> bytes:
    """Frame one Opus packet for the wire."""
    if len(payload) > MAX_OPUS_PACKET_BYTES:
        raise MessageTooBigError(f"audio packet of {len(payload)} bytes")
    if version == 1:
        return payload
    if version == 2:
        header = _V2_HEADER.pack(2, AUDIO_FRAME_TYPE, 0, timestamp & 0xFFFFFFFF, len(payload))
        return header + payload
    if version == 3:
        return _V3_HEADER.pack(AUDIO_FRAME_TYPE, 0, len(payload)) + payload
    raise FramingError(f"unsupported binary protocol version {version}")


def unpack(version: int, frame: bytes) -> AudioFrame:
    """Read one framed Opus packet, checking the header against the frame's real length."""
    header_size = HEADER_SIZES.get(version)
    if header_size is None:
        raise FramingError(f"unsupported binary protocol version {version}")
    if len(frame) < header_size:
        raise FramingError(
            f"v{version} frame of {len(frame)} bytes is shorter than its {header_size}-byte header"
        )
    timestamp = 0
    if version == 2:
        _, frame_type, _, timestamp, size = _V2_HEADER.unpack_from(frame)
    elif version == 3:
        frame_type, _, size = _V3_HEADER.unpack_from(frame)
    else:
        frame_type, size = AUDIO_FRAME_TYPE, len(frame)
    if frame_type != AUDIO_FRAME_TYPE:
        raise FramingError(f"v{version} frame of type {frame_type}, expected audio")
    if size != len(frame) - header_size:
        raise FramingError(
            f"v{version} header says {size} payload bytes, frame carries {len(frame) - header_size}"
        )
    if size > MAX_OPUS_PACKET_BYTES:
        raise MessageTooBigError(f"audio packet of {size} bytes exceeds {MAX_OPUS_PACKET_BYTES}")
    return AudioFrame(payload=frame[header_size:], timestamp=timestamp)
