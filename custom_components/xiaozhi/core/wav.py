"""Incremental WAV parsing for streamed TTS audio."""

from __future__ import annotations

import struct
from typing import Final

from .errors import CodecError

MAX_WAV_HEADER_BYTES: Final = 64 * 1024
_WAVE_FORMAT_PCM: Final = 1
_WAVE_FORMAT_EXTENSIBLE: Final = 0xFFFE


class WavStreamReader:
    """Turn a WAV byte stream into PCM as it arrives.

    The data chunk's size is ignored: streaming engines and ffmpeg write 0 or 0xFFFFFFFF there.
    """

    def __init__(self) -> None:
        """Start before the header."""
        self.sample_rate = 0
        self.channels = 0
        self.sample_width = 0
        self._header = bytearray()
        self._in_data = False

    @property
    def ready(self) -> bool:
        """Whether the header has been read."""
        return self._in_data

    def push(self, data: bytes) -> bytes:
        """Add bytes; return the PCM now available (empty while the header is incomplete)."""
        if self._in_data:
            return data
        self._header += data
        pcm = self._parse_header()
        if not self._in_data and len(self._header) > MAX_WAV_HEADER_BYTES:
            raise CodecError("WAV header too large")
        return pcm

    def _parse_header(self) -> bytes:
        buffer = self._header
        if len(buffer) < 12:
            return b""
        if buffer[:4] != b"RIFF" or buffer[8:12] != b"WAVE":
            raise CodecError("not a WAV stream")
        offset = 12
        while len(buffer) >= offset + 8:
            chunk_id = bytes(buffer[offset : offset + 4])
            (size,) = struct.unpack_from("<I", buffer, offset + 4)
            body = offset + 8
            if chunk_id == b"data":
                if not self.sample_rate:
                    raise CodecError("WAV data before its format")
                self._in_data = True
                pcm = bytes(buffer[body:])
                self._header.clear()
                return pcm
            if len(buffer) < body + size:
                return b""  # the chunk is not complete yet
            if chunk_id == b"fmt ":
                self._read_format(bytes(buffer[body : body + size]))
            offset = body + size + (size & 1)  # chunks are word aligned
        return b""

    def _read_format(self, fmt: bytes) -> None:
        if len(fmt) < 16:
            raise CodecError("WAV format chunk too short")
        audio_format, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", fmt)
        if audio_format not in (_WAVE_FORMAT_PCM, _WAVE_FORMAT_EXTENSIBLE) or bits != 16:
            raise CodecError(f"unsupported WAV encoding (format {audio_format}, {bits} bits)")
        self.sample_rate, self.channels, self.sample_width = rate, channels, bits // 8
