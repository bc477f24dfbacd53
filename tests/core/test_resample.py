"""In-process conversion of TTS audio to the device's reply rate."""

from __future__ import annotations

import numpy as np
import pytest

from custom_components.xiaozhi.core.errors import CodecError
from custom_components.xiaozhi.core.resample import PcmConverter
from tests.audio import tone


def dominant_hz(pcm: bytes, rate: int) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(float)
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.argmax(spectrum) * rate / len(samples))


@pytest.mark.parametrize(("from_rate", "channels"), [(16000, 1), (22050, 1), (48000, 2)])
def test_chunks_split_anywhere_come_out_at_the_device_rate(from_rate: int, channels: int) -> None:
    mono = tone(1.0, from_rate, freq=440.0)
    if channels == 2:
        left = np.frombuffer(mono, dtype="<i2")
        mono = np.column_stack([left, left]).astype("<i2").tobytes()
    converter = PcmConverter(from_rate, channels, 24000)
    out = b"".join(converter.convert(mono[i : i + 333]) for i in range(0, len(mono), 333))
    assert len(out) % 2 == 0
    assert len(out) / 2 == pytest.approx(24000, abs=24)  # one second, give or take a sample
    assert dominant_hz(out, 24000) == pytest.approx(440.0, abs=2.0)


def test_the_device_rate_passes_through_untouched() -> None:
    pcm = tone(0.2, 24000)
    converter = PcmConverter(24000, 1, 24000)
    assert converter.passthrough
    assert converter.convert(pcm[:101]) + converter.convert(pcm[101:]) == pcm


@pytest.mark.parametrize(("rate", "channels"), [(0, 1), (16000, 3)])
def test_unusable_audio_is_refused(rate: int, channels: int) -> None:
    with pytest.raises(CodecError):
        PcmConverter(rate, channels, 24000)
