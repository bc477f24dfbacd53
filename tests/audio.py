"""Test audio."""

from __future__ import annotations

import math


def tone(seconds: float, rate: int, freq: float = 440.0, amplitude: float = 0.3) -> bytes:
    """Return 16-bit mono PCM of a sine tone."""
    count = int(seconds * rate)
    scale = amplitude * 32767
    return b"".join(
        int(scale * math.sin(2 * math.pi * freq * i / rate)).to_bytes(2, "little", signed=True)
        for i in range(count)
    )
