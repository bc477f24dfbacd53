"""Microphone audio for the emulator: speech from espeak-ng or a file, frames, noise, WAV files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
import random
import shutil
import struct
import subprocess
import wave

from custom_components.xiaozhi.core.codec import PcmFramer, samples_per_frame
from custom_components.xiaozhi.core.const import (
    DEVICE_FRAME_DURATION_MS,
    DEVICE_SAMPLE_RATE,
    SAMPLE_WIDTH,
)


def frame_bytes(frame_duration_ms: int = DEVICE_FRAME_DURATION_MS) -> int:
    """Return the size of one microphone frame of 16 kHz 16-bit mono PCM."""
    return samples_per_frame(DEVICE_SAMPLE_RATE, frame_duration_ms) * SAMPLE_WIDTH


def speech_pcm(text: str, voice: str = "en-us") -> bytes:
    """Speak `text` with espeak-ng into what a device microphone sends: 16 kHz 16-bit mono.

    Needs the `espeak-ng` and `ffmpeg` programs; `voice` "cmn" speaks Mandarin.
    """
    for program in ("espeak-ng", "ffmpeg"):
        if shutil.which(program) is None:
            raise ValueError(f"{program} is not installed; use --wav instead")
    wav = subprocess.run(
        ["espeak-ng", "-v", voice, "--stdout", text], capture_output=True, check=True
    ).stdout
    return subprocess.run(
        [
            "ffmpeg",
            "-loglevel",
            "error",
            "-i",
            "pipe:0",
            "-ar",
            str(DEVICE_SAMPLE_RATE),
            "-ac",
            "1",
            "-f",
            "s16le",
            "pipe:1",
        ],
        input=wav,
        capture_output=True,
        check=True,
    ).stdout


def read_pcm(path: Path) -> bytes:
    """Read 16 kHz 16-bit mono PCM from a WAV file or a raw .pcm file."""
    if path.suffix.lower() != ".wav":
        return path.read_bytes()
    with wave.open(str(path), "rb") as wav:
        params = (wav.getframerate(), wav.getsampwidth(), wav.getnchannels())
        if params != (DEVICE_SAMPLE_RATE, SAMPLE_WIDTH, 1):
            raise ValueError(
                f"{path} is {params[0]} Hz, {8 * params[1]}-bit, {params[2]} channel(s); the "
                f"device sends 16 kHz 16-bit mono (convert with: ffmpeg -i {path} -ar 16000 "
                "-ac 1 -sample_fmt s16 out.wav)"
            )
        return wav.readframes(wav.getnframes())


def write_wav(path: Path, pcm: bytes, sample_rate: int) -> None:
    """Write 16-bit mono PCM as a WAV file."""
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(SAMPLE_WIDTH)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm)


def pcm_frames(pcm: bytes, frame_duration_ms: int = DEVICE_FRAME_DURATION_MS) -> Iterator[bytes]:
    """Cut PCM into microphone frames, the last one padded with silence."""
    framer = PcmFramer(frame_bytes(frame_duration_ms))
    yield from framer.push(pcm)
    if (last := framer.flush()) is not None:
        yield last


def room_noise(size: int, level: float, rng: random.Random) -> bytes:
    """Return `size` bytes of Gaussian noise with standard deviation `level` (0: silence)."""
    samples = size // SAMPLE_WIDTH
    if level <= 0:
        return b"\0" * size
    values = (max(-32768, min(32767, round(rng.gauss(0.0, level)))) for _ in range(samples))
    return struct.pack(f"<{samples}h", *values)
