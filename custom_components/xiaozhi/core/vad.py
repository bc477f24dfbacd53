"""Decide when the user has finished speaking, as early as it is safe to.

A streaming end-of-speech detector over 16 kHz 16-bit mono PCM. It scores each 10 ms with
pymicro-vad (the voice activity model Home Assistant's own pipeline uses, so it adds no
requirement) and ends the utterance after a run of trailing silence whose length follows the
VAD sensitivity the user picked.
"""

from __future__ import annotations

from enum import StrEnum
import math
from typing import Final

import numpy as np
from pymicro_vad import MicroVad  # type: ignore[import-untyped]

from .const import DEVICE_SAMPLE_RATE, SAMPLE_WIDTH

CHUNK_SECONDS: Final = 0.01
CHUNK_BYTES: Final = int(DEVICE_SAMPLE_RATE * CHUNK_SECONDS) * SAMPLE_WIDTH
SPEECH_THRESHOLD: Final = 0.5  # speech probability above which a 10 ms chunk is speech
START_THRESHOLD: Final = 0.25  # a lower bar before the utterance starts: short words score low
MIN_SPEECH_S: Final = 0.15  # this much speech (in a row) starts an utterance
NO_SPEECH_TIMEOUT_S: Final = 8.0  # default: nothing said for this long, nothing will be
MAX_UTTERANCE_S: Final = 15.0  # end an utterance that never pauses (as HA's pipeline does)
# The background level follows the quietest recent audio, and drifts up slowly so it tracks
# a noisier room. A chunk counts as speech only this far above it.
MAX_LEVEL_DB: Final = 90.3  # 10*log10(32768**2)
MIN_NOISE_FLOOR_DB: Final = 20.0  # digital silence is not the floor a voice is measured against
NOISE_FLOOR_RISE_DB_PER_CHUNK: Final = 0.01  # 1 dB/s
SPEECH_ABOVE_FLOOR_DB: Final = 12.0
# Silence after speech that ends the utterance, by HA's VAD sensitivity names. Every value keeps
# a 300 ms pause inside a command ("turn on the ... kitchen light") from ending it.
TRAILING_SILENCE_S: Final = {"aggressive": 0.35, "default": 0.4, "relaxed": 0.8}


class EndpointEvent(StrEnum):
    """What the detector noticed."""

    SPEECH_START = "speech_start"
    SPEECH_END = "speech_end"
    NO_SPEECH = "no_speech"


class SpeechEndpointer:
    """Finds the start and the end of one utterance in a stream of microphone audio."""

    def __init__(
        self,
        trailing_silence_s: float = TRAILING_SILENCE_S["default"],
        *,
        threshold: float = SPEECH_THRESHOLD,
        min_speech_s: float = MIN_SPEECH_S,
        no_speech_timeout_s: float | None = None,
    ) -> None:
        """Configure the detector; `no_speech_timeout_s` defaults to NO_SPEECH_TIMEOUT_S."""
        self.trailing_silence_s = trailing_silence_s
        self.threshold = threshold
        self.min_speech_s = min_speech_s
        self.no_speech_timeout_s = (
            NO_SPEECH_TIMEOUT_S if no_speech_timeout_s is None else no_speech_timeout_s
        )
        self._vad = MicroVad()
        self.reset()

    def reset(self) -> None:
        """Start over for the next utterance."""
        self._vad.Reset()
        self._pending = b""
        self.audio_s = 0.0  # audio processed so far
        self.in_speech = False
        self.done = False
        self.speech_start_s: float | None = None
        self.speech_end_s: float | None = None  # where speech ended, in stream time
        self._speech_run = 0.0
        self._silence_run = 0.0
        self._floor_db = MAX_LEVEL_DB

    def process(self, pcm: bytes) -> EndpointEvent | None:
        """Feed audio; return what it revealed, if anything (at most one event per call)."""
        if self.done:
            return None
        data = self._pending + pcm
        usable = len(data) - len(data) % CHUNK_BYTES
        self._pending = data[usable:]
        started: EndpointEvent | None = None
        for offset in range(0, usable, CHUNK_BYTES):
            chunk = data[offset : offset + CHUNK_BYTES]
            probability = self._vad.Process10ms(chunk)  # negative while it warms up
            self.audio_s += CHUNK_SECONDS
            bar = self.threshold if self.in_speech else START_THRESHOLD
            event = self._step(self._loud(chunk) and probability >= bar)
            if event is EndpointEvent.SPEECH_START:
                started = event
            elif event is not None:
                self.done = True
                return event
        return started

    def _loud(self, chunk: bytes) -> bool:
        """Whether a chunk stands out of the background noise.

        The model's speech probability stays high for a good half second after a voice stops;
        the signal level drops at once. Requiring both ends an utterance that much sooner.
        """
        samples = np.frombuffer(chunk, dtype="<i2").astype(np.float32)
        level = 10 * math.log10(float(np.mean(samples * samples)) + 1.0)
        if level < self._floor_db:
            self._floor_db = level
        else:
            self._floor_db += NOISE_FLOOR_RISE_DB_PER_CHUNK
        return level > max(self._floor_db, MIN_NOISE_FLOOR_DB) + SPEECH_ABOVE_FLOOR_DB

    def _step(self, is_speech: bool) -> EndpointEvent | None:
        if not self.in_speech:
            self._speech_run = self._speech_run + CHUNK_SECONDS if is_speech else 0.0
            if self._speech_run >= self.min_speech_s:
                self.in_speech = True
                self.speech_start_s = self.audio_s - self._speech_run
                return EndpointEvent.SPEECH_START
            if self.audio_s >= self.no_speech_timeout_s:
                return EndpointEvent.NO_SPEECH
            return None
        self._silence_run = 0.0 if is_speech else self._silence_run + CHUNK_SECONDS
        if self._silence_run >= self.trailing_silence_s:
            self.speech_end_s = self.audio_s - self._silence_run
            return EndpointEvent.SPEECH_END
        assert self.speech_start_s is not None
        if self.audio_s - self.speech_start_s >= MAX_UTTERANCE_S:
            self.speech_end_s = self.audio_s
            return EndpointEvent.SPEECH_END
        return None
