"""Tests for Opus decode/encode through the real libopus."""

from __future__ import annotations

import numpy as np
import pytest

from custom_components.xiaozhi.core.codec import (
    OpusDecoder,
    OpusEncoder,
    PcmFramer,
    packet_samples,
)
from custom_components.xiaozhi.core.errors import CodecError
from tests.audio import tone


def rms(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(samples**2)))


@pytest.mark.parametrize("rate", [16000, 24000, 48000])
def test_round_trip_keeps_length_and_energy(rate: int) -> None:
    encoder = OpusEncoder(rate, 60)
    decoder = OpusDecoder(rate)
    pcm = tone(1.2, rate)
    framer = PcmFramer(encoder.frame_bytes)
    packets = [encoder.encode(frame) for frame in framer.push(pcm)]
    assert len(packets) == 20
    assert all(0 < len(p) < 1000 for p in packets)
    decoded = b"".join(decoder.decode(p) for p in packets)
    assert len(decoded) == len(pcm)
    # Opus has a few ms of look-ahead: compare energy after the first frame.
    skip = encoder.frame_bytes
    assert rms(decoded[skip:]) == pytest.approx(rms(pcm[skip:]), rel=0.15)


def test_decode_at_another_rate() -> None:
    """Opus decodes any stream at any of its rates: the device relies on it."""
    packet = OpusEncoder(24000, 60).encode(tone(0.06, 24000))
    assert len(OpusDecoder(16000).decode(packet)) == 960 * 2


def test_empty_packet_gives_no_audio() -> None:
    assert OpusDecoder().decode(b"") == b""


def test_corrupt_packet_raises_codec_error() -> None:
    with pytest.raises(CodecError):
        OpusDecoder().decode(b"\xff" * 3)


def test_encoder_rejects_partial_frame_and_bad_rates() -> None:
    encoder = OpusEncoder(24000, 60)
    with pytest.raises(CodecError):
        encoder.encode(b"\x00" * 100)
    with pytest.raises(CodecError):
        OpusEncoder(44100, 60)
    with pytest.raises(CodecError):
        OpusDecoder(22050)


def test_framer_cuts_and_pads() -> None:
    framer = PcmFramer(4)
    assert framer.push(b"abc") == []
    assert framer.push(b"defghij") == [b"abcd", b"efgh"]
    assert framer.flush() == b"ij\x00\x00"
    assert framer.flush() is None


def test_a_packets_length_is_read_from_its_header_without_a_decoder() -> None:
    for duration in (20, 60):
        packet = OpusEncoder(16000, duration).encode(tone(duration / 1000, 16000))
        assert packet_samples(packet) == 16 * duration  # at the device rate
        assert packet_samples(packet, 24000) == 24 * duration
    assert packet_samples(b"") == 0
    with pytest.raises(CodecError):
        packet_samples(b"\x03")  # code 3 (frame count follows) cut short
