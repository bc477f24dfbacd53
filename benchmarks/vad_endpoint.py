"""End-of-speech latency and cost of the hub's endpointer, on real (espeak-ng) speech.

    scripts/env python benchmarks/vad_endpoint.py

For each sensitivity: how long after the speech really ends the hub ends the utterance, on the
raw recording and after the firmware's Opus encoding (what the hub really hears; the decision
falls on the 60 ms frame boundary), whether a command with a 300/350 ms pause inside survives
(Opus), and microseconds per 60 ms device frame.
Reference points measured on this machine with the same recording: the reference server's Silero
VAD ends ~0.43 s after the speech, HA's pipeline VAD ~1.0 s at its default sensitivity.
"""

from __future__ import annotations

from pathlib import Path
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from custom_components.xiaozhi.core.codec import OpusDecoder, OpusEncoder
from custom_components.xiaozhi.core.vad import (
    TRAILING_SILENCE_S,
    EndpointEvent,
    SpeechEndpointer,
)
from tools.audio import speech_pcm
from tools.microphone import DEVICE_OPUS_COMPLEXITY

RATE = 16000
FRAME_BYTES = 1920
VOICE_LEVEL = 500
NOISE_STD = 30  # faint room noise, 16-bit sample units
rng = np.random.default_rng(1)


def voiced(text: str, voice: str = "en-us") -> np.ndarray:
    """Speech trimmed to the voice."""
    audio = np.frombuffer(speech_pcm(text, voice), dtype="<i2")
    idx = np.nonzero(np.abs(audio) > VOICE_LEVEL)[0]
    return audio[idx[0] : idx[-1] + 1]


def room(seconds: float) -> np.ndarray:
    """Faint room noise."""
    return rng.normal(0, NOISE_STD, int(seconds * RATE)).astype("<i2")


def through_opus(audio: np.ndarray) -> np.ndarray:
    """What the hub decodes after the firmware encoded `audio` (16 kHz, 60 ms frames)."""
    encoder = OpusEncoder(RATE, 60, bitrate=None, complexity=DEVICE_OPUS_COMPLEXITY)
    decoder = OpusDecoder(RATE)
    data = audio.tobytes()
    frames = (data[i : i + FRAME_BYTES] for i in range(0, len(data) - FRAME_BYTES + 1, FRAME_BYTES))
    return np.frombuffer(b"".join(decoder.decode(encoder.encode(f)) for f in frames), dtype="<i2")


def end_time(audio: np.ndarray, trailing: float) -> tuple[float | None, float]:
    """Return (stream time of the end event, microseconds per frame)."""
    endpointer = SpeechEndpointer(trailing)
    data = audio.tobytes()
    frames = 0
    started = time.perf_counter()
    ended = None
    for offset in range(0, len(data), FRAME_BYTES):
        frames += 1
        if endpointer.process(data[offset : offset + FRAME_BYTES]) is EndpointEvent.SPEECH_END:
            ended = frames * FRAME_BYTES / 2 / RATE  # when the frame that revealed it arrived
            break
    return ended, (time.perf_counter() - started) / frames * 1e6


def main() -> None:
    """Print the table."""
    lead = 0.5
    commands = {
        "en": voiced("turn on the kitchen light"),
        "zh": voiced("打开厨房的灯", "cmn"),
    }
    first, second = voiced("could you please turn on the light in the"), voiced("kitchen")
    print(
        f"{'sensitivity':<12}{'trailing':>9}{'en end':>9}{'zh end':>9}{'en opus':>9}{'zh opus':>9}"
        f"{'300ms pause':>13}{'350ms pause':>13}{'us/frame':>10}"
    )
    for sensitivity, trailing in TRAILING_SILENCE_S.items():
        latencies, costs = [], []
        for codec in (lambda audio: audio, through_opus):
            for audio in commands.values():
                clip = codec(np.concatenate([room(lead), audio, room(3.0)]))
                ended, cost = end_time(clip, trailing)
                assert ended is not None
                latencies.append(ended - lead - len(audio) / RATE)
                costs.append(cost)
        pauses = []
        for pause in (0.3, 0.35):
            clip = np.concatenate([room(lead), first, room(pause), second, room(3.0)])
            ended, cost = end_time(through_opus(clip), trailing)
            second_ends = (len(clip) - 3.0 * RATE) / RATE
            pauses.append("kept" if ended is not None and ended > second_ends else "CUT")
            costs.append(cost)
        print(
            f"{sensitivity:<12}{trailing:>8.2f}s"
            + "".join(f"{latency:>8.2f}s" for latency in latencies)
            + f"{pauses[0]:>13}{pauses[1]:>13}{statistics.median(costs):>10.0f}"
        )


if __name__ == "__main__":
    main()
