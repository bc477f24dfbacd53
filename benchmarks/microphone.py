"""A device microphone for the benchmarks: a spoken command, Opus-encoded once, sent in real time.

Frame k holds the audio from k*60 ms to (k+1)*60 ms, so a real device sends it (k+1)*60 ms after
its microphone opened; `Utterance.speech_end_s` is when, on that clock, the voice stopped.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
import statistics

import numpy as np

from custom_components.xiaozhi.core.codec import OpusEncoder
from custom_components.xiaozhi.core.const import DEVICE_FRAME_DURATION_MS, DEVICE_SAMPLE_RATE
from custom_components.xiaozhi.core.messages import ListenMode
from tools.audio import pcm_frames, speech_pcm
from tools.emulator import DEVICE_OPUS_COMPLEXITY, DeviceEmulator

FRAME_S = DEVICE_FRAME_DURATION_MS / 1000
VOICE_LEVEL = 500  # samples louder than this are voice, for trimming the recording
NOISE_STD = 30  # faint room noise, 16-bit sample units
MANUAL_SPEECH_FRAMES = 5  # what a manual-mode turn says before `listen stop` (0.3 s)
REPLY_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Utterance:
    """Opus frames of room noise, a command, then room noise."""

    packets: list[bytes]
    speech_end_s: float  # on the microphone's clock
    pcm: bytes  # what the microphone heard (16 kHz 16-bit mono), before Opus


def make_utterance(
    text: str = "turn on the kitchen light", *, lead_s: float = 0.3, tail_s: float = 4.0
) -> Utterance:
    """Speak `text` (espeak-ng), trim it to the voice, pad it with room noise, encode it."""
    voice = np.frombuffer(speech_pcm(text), dtype="<i2")
    loud = np.nonzero(np.abs(voice) > VOICE_LEVEL)[0]
    voice = voice[loud[0] : loud[-1] + 1]
    rng = np.random.default_rng(1)

    def room(seconds: float) -> np.ndarray:
        return rng.normal(0, NOISE_STD, int(seconds * DEVICE_SAMPLE_RATE)).astype("<i2")

    pcm = np.concatenate([room(lead_s), voice, room(tail_s)]).tobytes()
    encoder = OpusEncoder(
        DEVICE_SAMPLE_RATE,
        DEVICE_FRAME_DURATION_MS,
        bitrate=None,
        complexity=DEVICE_OPUS_COMPLEXITY,
    )
    packets = [encoder.encode(frame) for frame in pcm_frames(pcm)]
    return Utterance(packets, lead_s + len(voice) / DEVICE_SAMPLE_RATE, pcm)


async def send_in_real_time(device: DeviceEmulator, packets: list[bytes], opened_at: float) -> None:
    """Send frame k at `opened_at` + (k+1) frame times, as a microphone that opened then would."""
    loop = asyncio.get_running_loop()
    for index, packet in enumerate(packets, start=1):
        delay = opened_at + index * FRAME_S - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        await device.send_packet(packet)


async def manual_turn(device: DeviceEmulator, packets: list[bytes]) -> int:
    """Say `packets` in manual mode, wait for the reply's first frame; return its index."""
    first = len(device.received.audio)
    await device.listen_start(ListenMode.MANUAL)
    await send_in_real_time(device, packets, asyncio.get_running_loop().time())
    await device.listen_stop()
    await device.wait_for_audio(first + 1, timeout=REPLY_TIMEOUT_S)
    return first


async def barge_in(device: DeviceEmulator) -> None:
    """Abort the reply and wait until the hub has stopped it."""
    after = len(device.received.messages)
    await device.abort()
    await device.wait_for("tts", "stop", after=after, timeout=REPLY_TIMEOUT_S)


def percentiles(values: list[float], *points: int) -> dict[str, float]:
    """The given percentiles (interpolated), keyed p50, p95, ..."""
    if not values:
        return {f"p{point}": float("nan") for point in points}
    ordered = sorted(values)
    cuts = statistics.quantiles(ordered, n=100, method="inclusive") if len(ordered) > 1 else []
    return {
        f"p{point}": (cuts[point - 1] if cuts and point < 100 else ordered[-1]) for point in points
    }
