"""Each device microphone's decoder and voice scorer, kept where its frames are decoded.

A session names its microphone by a number and sends the calls below through its codec queue
(`offload.py`), in order: on the executor thread of the process that serves the device, or in
the add-on's worker process (`worker.py`), which is why they are plain functions of a number and
bytes. A microphone's state is made at its first frame and dropped by `end`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import itertools
from typing import TYPE_CHECKING

from .codec import OpusDecoder
from .const import DEVICE_SAMPLE_RATE

if TYPE_CHECKING:
    from .vad import ScoredWindow, WindowScorer

type DecodeJob = tuple[int, bytes, bool]
"""A frame to decode: the microphone, the Opus packet, and whether to score its windows."""

_numbers = itertools.count(1)


@dataclass
class _Microphone:
    decoder: OpusDecoder = field(default_factory=lambda: OpusDecoder(DEVICE_SAMPLE_RATE))
    scorer: WindowScorer | None = None  # from the first frame asked to be scored


_microphones: dict[int, _Microphone] = {}


def new_microphone() -> int:
    """A number for a new microphone (its state is made where its first frame is decoded)."""
    return next(_numbers)


def decode(job: DecodeJob) -> tuple[bytes, list[ScoredWindow] | None]:
    """Decode one frame to PCM; with the windows it completes scored, if asked.

    A frame not scored breaks the scorer's stream: the next scored one starts a new one.
    """
    number, packet, score = job
    if (microphone := _microphones.get(number)) is None:
        microphone = _microphones[number] = _Microphone()
    pcm = microphone.decoder.decode(packet)
    if score and microphone.scorer is None:
        from .vad import WindowScorer  # noqa: PLC0415 - only microphones scored load the model

        microphone.scorer = WindowScorer()
    if (scorer := microphone.scorer) is None or not pcm:
        return pcm, None
    if not score:
        scorer.skip()
        return pcm, None
    return pcm, scorer.score(pcm)


def speech_over(number: int) -> None:
    """The turn's end was decided: the scorer skips the background from now on."""
    if (microphone := _microphones.get(number)) is not None and microphone.scorer is not None:
        microphone.scorer.speech_over()


def pause(number: int) -> None:
    """The microphone streams nothing for now: its scorer gives its voice model back."""
    if (microphone := _microphones.get(number)) is not None and microphone.scorer is not None:
        microphone.scorer.pause()


def end(number: int) -> None:
    """The device is gone: drop its microphone's state (its model goes back to the pool)."""
    if (microphone := _microphones.pop(number, None)) is not None and microphone.scorer is not None:
        microphone.scorer.pause()


def holds_model(number: int) -> bool:
    """Whether the microphone's scorer holds a voice model now (here, in this process)."""
    microphone = _microphones.get(number)
    return bool(microphone and microphone.scorer and microphone.scorer.holds_model)
