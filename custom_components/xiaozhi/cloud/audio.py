"""WAV helpers for the audio the speech services take and return."""

from __future__ import annotations

import io
import struct
from typing import Final
import wave

SAMPLE_WIDTH: Final = 2  # 16-bit PCM everywhere
CHANNELS: Final = 1
_UNKNOWN_SIZE: Final = 0xFFFFFFFF  # what streaming engines and ffmpeg write for "until the end"


def wav_stream_header(sample_rate: int) -> bytes:
    """A header for 16-bit mono PCM of unknown length, to put before streamed audio."""
    block_align = SAMPLE_WIDTH * CHANNELS
    return (
        b"RIFF"
        + struct.pack("<I", _UNKNOWN_SIZE)
        + b"WAVEfmt "
        + struct.pack(
            "<IHHIIHH",
            16,
            1,  # PCM
            CHANNELS,
            sample_rate,
            sample_rate * block_align,
            block_align,
            SAMPLE_WIDTH * 8,
        )
        + b"data"
        + struct.pack("<I", _UNKNOWN_SIZE)
    )


def wav_file(pcm: bytes, sample_rate: int, sample_width: int, channels: int) -> bytes:
    """A whole WAV file around PCM (for services that take a file)."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(sample_width)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm)
    return buffer.getvalue()
