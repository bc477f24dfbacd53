"""Where the time of a voice turn goes, for diagnostics and the benchmarks.

Every mark is the event loop's clock (`loop.time()`, monotonic), so marks taken by the session,
the host and a benchmark's emulated device compare directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import StrEnum


class Stage(StrEnum):
    """The moments of one turn, in the order they happen."""

    SPEECH_END = "speech_end"  # the hub decided the user finished (VAD end or `listen stop`)
    TTS_START = "tts_start"  # the device was told to switch to speaking
    STT_END = "stt_end"  # the transcript is known
    INTENT_END = "intent_end"  # the agent has answered
    TTS_READY = "tts_ready"  # the reply's TTS stream can be read
    FIRST_PCM = "first_pcm"  # the first reply PCM is here
    FIRST_ENCODED = "first_encoded"  # its first Opus frame is ready to send
    FIRST_FRAME = "first_frame"  # the first reply Opus frame was handed to the transport


class EndedBy(StrEnum):
    """What ended the user's speech."""

    SILENCE = "silence"  # the endpointer: the silence after the speech
    COMMAND = "command"  # at a pause, the words already made a command (the command check)
    LISTEN_STOP = "listen stop"  # the device (manual mode)


@dataclass
class TurnTimings:
    """The marks of one turn; a mark is set once, the first time its moment comes."""

    marks: dict[Stage, float] = field(default_factory=dict)
    ended_by: EndedBy | None = None  # None while open, and for typed text
    check_s: float | None = None  # how long the command check that ended it took

    def mark(self, stage: Stage, at: float) -> None:
        """Record when `stage` happened, unless it was recorded already."""
        self.marks.setdefault(stage, at)

    def since_speech_end(self) -> dict[str, float]:
        """Milliseconds from the end of speech to each later mark."""
        if (start := self.marks.get(Stage.SPEECH_END)) is None:
            return {}
        return {
            stage.value: round((at - start) * 1000, 2)
            for stage, at in sorted(self.marks.items(), key=lambda item: item[1])
            if stage is not Stage.SPEECH_END
        }


@dataclass
class CodecStats:
    """Time spent in the codec for one session (`time.perf_counter` seconds)."""

    decode_s: float = 0.0
    frames_decoded: int = 0
    encode_s: float = 0.0
    frames_encoded: int = 0

    def as_dict(self) -> dict[str, float]:
        """Totals, and microseconds per frame."""
        result: dict[str, float] = {f.name: getattr(self, f.name) for f in fields(self)}
        result["decode_us_per_frame"] = _per_frame_us(self.decode_s, self.frames_decoded)
        result["encode_us_per_frame"] = _per_frame_us(self.encode_s, self.frames_encoded)
        return result


def _per_frame_us(total_s: float, frames: int) -> float:
    return round(total_s / frames * 1e6, 1) if frames else 0.0
