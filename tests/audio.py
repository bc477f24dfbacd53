"""Test audio."""

from __future__ import annotations

from functools import cache
import itertools
import math
import statistics

import numpy as np
import pytest

from custom_components.xiaozhi.core.const import MAX_PLAYBACK_LEAD_FRAMES

BLOCK_S = 0.02  # the envelope's step in voiced_seconds
DIGITAL_SILENCE_DB = 10.0  # blocks quieter than this are exact zeros, not the room
VOICED_ABOVE_FLOOR_DB = 6.0  # a block this far above the room's level is voice
FLOOR_PERCENTILE = 10  # the room's level: this percentile of the blocks


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
    """After the pre-buffer, frames arrive one per frame time, never in a burst.

    The pre-buffer may grow to `MAX_PLAYBACK_LEAD_FRAMES` (frames go `PACING_EARLY_S` early).
    """
    assert_never_ahead(times, frame_s, MAX_PLAYBACK_LEAD_FRAMES)
    gaps = [b - a for a, b in itertools.pairwise(times[lead_frames:])]
    assert len(gaps) >= 10
    # The median ignores a frame the scheduler delayed (and the catch-up right after it).
    assert statistics.median(gaps) == pytest.approx(frame_s, abs=0.005)


def voiced_seconds(pcm: bytes, rate: int = 16000) -> float:
    """How much voice 16-bit mono PCM holds: its 20 ms blocks well above the room's level."""
    block = int(BLOCK_S * rate)
    samples = np.frombuffer(pcm, "<i2")
    blocks = samples[: len(samples) // block * block].astype(np.float64).reshape(-1, block)
    if not len(blocks):
        return 0.0
    level = 10 * np.log10((blocks**2).mean(axis=1) + 1.0)
    room = level[level > DIGITAL_SILENCE_DB]
    if not len(room):
        return 0.0
    floor = float(np.percentile(room, FLOOR_PERCENTILE))
    return float((level > floor + VOICED_ABOVE_FLOOR_DB).sum()) * BLOCK_S
