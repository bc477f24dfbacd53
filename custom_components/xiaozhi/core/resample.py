"""Reply audio in whatever rate a TTS engine speaks, made into the device's: in process, per chunk.

This replaces an ffmpeg process per reply. `audioop` is the standard library's (from Python 3.13
the `audioop-lts` package, which Home Assistant itself requires).
"""

from __future__ import annotations

import audioop

from .const import SAMPLE_WIDTH
from .errors import CodecError

type _RateState = tuple[int, tuple[tuple[int, int], ...]] | None


class PcmConverter:
    """16-bit PCM of any rate and channel count to 16-bit mono at `to_rate`, chunk by chunk."""

    def __init__(self, from_rate: int, channels: int, to_rate: int) -> None:
        """Describe the input; chunks may split samples anywhere."""
        if from_rate <= 0 or channels not in (1, 2):
            raise CodecError(f"cannot convert {from_rate} Hz audio with {channels} channels")
        self.from_rate = from_rate
        self.channels = channels
        self.to_rate = to_rate
        self._block = SAMPLE_WIDTH * channels
        self._pending = b""
        self._state: _RateState = None

    @property
    def passthrough(self) -> bool:
        """Whether the input is already what the device plays."""
        return self.from_rate == self.to_rate and self.channels == 1

    def convert(self, data: bytes) -> bytes:
        """Return the converted audio of every whole sample received so far."""
        data = self._pending + data
        whole = len(data) - len(data) % self._block
        self._pending = data[whole:]
        pcm = data[:whole]
        if not pcm or self.passthrough:
            return pcm
        if self.channels == 2:
            pcm = audioop.tomono(pcm, SAMPLE_WIDTH, 0.5, 0.5)
        if self.from_rate != self.to_rate:
            pcm, self._state = audioop.ratecv(
                pcm, SAMPLE_WIDTH, 1, self.from_rate, self.to_rate, self._state
            )
        return pcm
