"""Opus decode of device audio and encode of reply audio, with the real libopus."""

from __future__ import annotations

import ctypes
from typing import Final

import opuslib_next  # type: ignore[import-untyped]
from opuslib_next.api import libopus as _libopus  # type: ignore[import-untyped]
from opuslib_next.api.decoder import (  # type: ignore[import-untyped]
    libopus_decode as _libopus_decode,
)

from .const import (
    DEVICE_SAMPLE_RATE,
    MAX_OPUS_FRAME_DURATION_MS,
    OPUS_FRAME_DURATIONS_MS,
    OPUS_SAMPLE_RATES,
    SAMPLE_WIDTH,
)
from .errors import CodecError

REPLY_BITRATE: Final = 32000  # bit/s; clear speech on a small speaker at ~4 KB/s
REPLY_COMPLEXITY: Final = 5  # libopus 0-10; speech quality is flat above ~5, cost is not


# Reads a packet's header: no decoder state is needed to know how long it plays.
_libopus_packet_samples = _libopus.opus_packet_get_nb_samples
_libopus_packet_samples.argtypes = (ctypes.c_char_p, ctypes.c_int32, ctypes.c_int32)
_libopus_packet_samples.restype = ctypes.c_int


def packet_samples(packet: bytes, sample_rate: int = DEVICE_SAMPLE_RATE) -> int:
    """How many samples `packet` decodes to at `sample_rate`, read from its header."""
    if not packet:
        return 0
    samples: int = _libopus_packet_samples(packet, len(packet), sample_rate)
    if samples < 0:
        error = opuslib_next.OpusError(samples)
        raise CodecError(f"cannot read Opus packet of {len(packet)} bytes: {error}")
    return samples


def samples_per_frame(sample_rate: int, frame_duration_ms: int) -> int:
    """Return the number of samples in one mono frame."""
    return sample_rate * frame_duration_ms // 1000


class OpusDecoder:
    """Decode mono Opus packets to 16-bit PCM at a fixed output rate (16 kHz for the pipeline)."""

    def __init__(self, sample_rate: int = DEVICE_SAMPLE_RATE) -> None:
        """Create a decoder; Opus decodes any stream at any of its rates."""
        if sample_rate not in OPUS_SAMPLE_RATES:
            raise CodecError(f"Opus cannot decode at {sample_rate} Hz")
        self.sample_rate = sample_rate
        self._max_samples = samples_per_frame(sample_rate, MAX_OPUS_FRAME_DURATION_MS)
        self._decoder = opuslib_next.Decoder(sample_rate, 1)
        # One output buffer for every call: the binding's own decode() allocates one and copies
        # it out sample by sample through a Python list, which costs more than the decoding.
        self._pcm = (ctypes.c_int16 * self._max_samples)()
        self._pcm_pointer = ctypes.cast(self._pcm, ctypes.POINTER(ctypes.c_int16))

    def decode(self, packet: bytes) -> bytes:
        """Decode one packet; an empty packet (DTX) gives no audio."""
        if not packet:
            return b""
        samples: int = _libopus_decode(
            self._decoder.decoder_state,
            packet,
            len(packet),
            self._pcm_pointer,
            self._max_samples,
            0,
        )
        if samples < 0:
            error = opuslib_next.OpusError(samples)
            raise CodecError(f"cannot decode Opus packet of {len(packet)} bytes: {error}")
        return ctypes.string_at(self._pcm, samples * SAMPLE_WIDTH)


class OpusEncoder:
    """Encode 16-bit mono PCM frames of a fixed duration to Opus packets."""

    def __init__(
        self,
        sample_rate: int,
        frame_duration_ms: int,
        *,
        bitrate: int | None = REPLY_BITRATE,
        complexity: int = REPLY_COMPLEXITY,
    ) -> None:
        """Create an encoder for speech; `bitrate` None lets libopus choose."""
        if sample_rate not in OPUS_SAMPLE_RATES:
            raise CodecError(f"Opus cannot encode at {sample_rate} Hz")
        if frame_duration_ms not in OPUS_FRAME_DURATIONS_MS:
            raise CodecError(f"Opus cannot encode {frame_duration_ms} ms frames")
        self.sample_rate = sample_rate
        self.frame_samples = samples_per_frame(sample_rate, frame_duration_ms)
        self.frame_bytes = self.frame_samples * SAMPLE_WIDTH
        self._encoder = opuslib_next.Encoder(sample_rate, 1, opuslib_next.APPLICATION_AUDIO)
        if bitrate is not None:
            self._encoder.bitrate = bitrate
        self._encoder.complexity = complexity

    def encode(self, pcm: bytes) -> bytes:
        """Encode exactly one frame of PCM."""
        if len(pcm) != self.frame_bytes:
            raise CodecError(f"expected {self.frame_bytes} bytes of PCM, got {len(pcm)}")
        try:
            packet: bytes = self._encoder.encode(pcm, self.frame_samples)
        except opuslib_next.OpusError as err:
            raise CodecError(f"cannot encode PCM frame: {err}") from None
        return packet


class PcmFramer:
    """Cut a stream of PCM chunks of any size into whole frames."""

    def __init__(self, frame_bytes: int) -> None:
        """Collect PCM until `frame_bytes` are available."""
        self.frame_bytes = frame_bytes
        self._pending = bytearray()

    def push(self, pcm: bytes) -> list[bytes]:
        """Add PCM; return the whole frames now available."""
        self._pending += pcm
        count = len(self._pending) // self.frame_bytes
        if not count:
            return []
        cut = count * self.frame_bytes
        frames = [
            bytes(self._pending[i : i + self.frame_bytes]) for i in range(0, cut, self.frame_bytes)
        ]
        del self._pending[:cut]
        return frames

    def flush(self) -> bytes | None:
        """Return the remainder padded with silence to a whole frame, or None if empty."""
        if not self._pending:
            return None
        # Keep sample alignment if an odd byte slipped in.
        frame = bytes(self._pending[: self.frame_bytes]).ljust(self.frame_bytes, b"\0")
        self._pending.clear()
        return frame
