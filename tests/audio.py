"""Test audio."""

from __future__ import annotations

from functools import cache
import itertools
import math
import statistics

import pytest


@cache  # test TTS engines answer at once: the same tone is not synthesized twice
def tone(seconds: float, rate: int, freq: float = 440.0, amplitude: float = 0.3) -> bytes:
    """Return 16-bit mono PCM of a sine tone."""
    count = int(seconds * rate)
    scale = amplitude * 32767
    return b"".join(
        int(scale * math.sin(2 * math.pi * freq * i / rate)).to_bytes(2, "little", signed=True)
        for i in range(count)
    )


def assert_never_ahead(times: list[float], frame_s: float, lead_frames: int) -> None:
    """Frames never arrive faster than real time beyond the pre-buffer.

    This is a lower bound only: a loaded machine may deliver late, never early. After a stall
    (a streaming TTS waiting for text) the device's queue has drained, so the pre-buffer may be
    refilled at once; any window of frames still fits in real time.
    """
    for i, first in enumerate(times):
        for j in range(i + 1, len(times)):
            assert j - i <= lead_frames + 1 + (times[j] - first) / frame_s + 0.5


def assert_paced(times: list[float], frame_s: float, lead_frames: int) -> None:
    """After the pre-buffer, frames arrive one per frame time, never in a burst."""
    assert_never_ahead(times, frame_s, lead_frames)
    gaps = [b - a for a, b in itertools.pairwise(times[lead_frames:])]
    assert len(gaps) >= 10
    # The median ignores a frame the scheduler delayed (and the catch-up right after it).
    assert statistics.median(gaps) == pytest.approx(frame_s, abs=0.005)
