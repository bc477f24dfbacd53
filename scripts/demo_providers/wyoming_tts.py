"""Offline text-to-speech over the Wyoming protocol, with the espeak-ng binary.

Speaks English and Mandarin Chinese (UTF-8 text) and answers with 16-bit mono PCM at espeak's
native 22050 Hz. Run: python -m scripts.demo_providers.wyoming_tts --uri tcp://HOST:PORT
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import struct
import time

from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Attribution, Describe, Info, TtsProgram, TtsVoice
from wyoming.server import AsyncEventHandler, AsyncServer
from wyoming.tts import Synthesize, SynthesizeStop, SynthesizeStopped

from scripts.demo_providers import runner

_LOGGER = logging.getLogger("wyoming_tts")

# Wyoming voice name -> (espeak-ng voice, language tags offered to Home Assistant, description).
# HA makes the alphabetically first tag the entity's default language: keep that "en".
VOICES: dict[str, tuple[str, list[str], str]] = {
    "en-us": ("en-us", ["en", "en-US"], "English (US)"),
    "en-gb": ("en-gb", ["en-GB"], "English (UK)"),
    "cmn": ("cmn", ["zh", "zh-CN", "zh-Hans"], "Mandarin Chinese"),
}
DEFAULT_VOICE = "en-us"
CHINESE_VOICE = "cmn"
SAMPLES_PER_CHUNK = 1024
TIMEOUT = 30.0  # seconds for one espeak-ng run
_HAN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")

_ATTRIBUTION = Attribution(name="eSpeak NG", url="https://github.com/espeak-ng/espeak-ng")
INFO = Info(
    tts=[
        TtsProgram(
            name="espeak-ng",
            attribution=_ATTRIBUTION,
            installed=True,
            description="Offline English and Mandarin speech (espeak-ng)",
            version=None,
            voices=[
                TtsVoice(
                    name=name,
                    attribution=_ATTRIBUTION,
                    installed=True,
                    description=description,
                    version=None,
                    languages=languages,
                )
                for name, (_voice, languages, description) in VOICES.items()
            ],
        )
    ]
)


def pick_voice(text: str, name: str | None = None, language: str | None = None) -> str:
    """Return the VOICES key for a request: by name, else by language, else by script."""
    if name in VOICES:
        return name
    tag = (language or name or "").lower().replace("_", "-")
    if tag.startswith(("zh", "cmn")):
        return CHINESE_VOICE
    if tag.startswith(("en-gb", "en-uk")):
        return "en-gb"
    if tag.startswith("en"):
        return DEFAULT_VOICE
    return CHINESE_VOICE if _HAN.search(text) else DEFAULT_VOICE


def parse_wav(data: bytes) -> tuple[int, int, int, bytes]:
    """Return (rate, width, channels, pcm) of a RIFF WAV stream.

    espeak-ng --stdout cannot seek back, so its header's sizes are placeholders: the data
    chunk is taken to run to the end of the stream.
    """
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a WAV stream")
    pos, fmt = 12, None
    while pos + 8 <= len(data):
        chunk_id, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        if chunk_id == b"fmt ":
            fmt = struct.unpack_from("<HHIIHH", data, pos + 8)
        elif chunk_id == b"data":
            if fmt is None or fmt[0] != 1:
                raise ValueError("WAV stream is not PCM")
            _tag, channels, rate, _byte_rate, _align, bits = fmt
            width = bits // 8
            pcm = data[pos + 8 : pos + 8 + min(size, len(data) - pos - 8)]
            return rate, width, channels, pcm[: len(pcm) // (width * channels) * width * channels]
        pos += 8 + size + (size & 1)
    raise ValueError("WAV stream has no data chunk")


async def synthesize(text: str, voice: str) -> tuple[int, int, int, bytes]:
    """Run espeak-ng on UTF-8 text with a VOICES key; return (rate, width, channels, pcm)."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise RuntimeError("espeak-ng is not installed")
    proc = await asyncio.create_subprocess_exec(
        espeak,
        "-v",
        VOICES[voice][0],
        "-b",
        "1",  # input is UTF-8
        "--stdin",
        "--stdout",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(text.encode()), TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"espeak-ng failed ({proc.returncode}): {err.decode(errors='replace')}")
    return parse_wav(out)


class TtsHandler(AsyncEventHandler):
    """One client connection: Describe -> Info; Synthesize -> AudioStart, AudioChunk*, AudioStop."""

    async def handle_event(self, event: Event) -> bool:
        """Answer one event; keep the connection open."""
        if Describe.is_type(event.type):
            await self.write_event(INFO.event())
        elif Synthesize.is_type(event.type):
            await self._synthesize(Synthesize.from_event(event))
        elif SynthesizeStop.is_type(event.type):
            # Streaming clients send the whole text as a Synthesize too; that one was answered.
            await self.write_event(SynthesizeStopped().event())
        return True

    async def _synthesize(self, request: Synthesize) -> None:
        voice = pick_voice(
            request.text,
            request.voice.name if request.voice else None,
            request.voice.language if request.voice else None,
        )
        started = time.perf_counter()
        try:
            rate, width, channels, pcm = await synthesize(request.text, voice)
        except (OSError, RuntimeError, TimeoutError, ValueError) as err:
            _LOGGER.error("cannot synthesize %r: %s", request.text, err)
            await self.write_event(Error(text=str(err), code="tts-failed").event())
            return
        _LOGGER.debug(
            "%r (%s) -> %.2f s of audio in %.0f ms",
            request.text,
            voice,
            len(pcm) / (rate * width * channels),
            (time.perf_counter() - started) * 1000,
        )
        await self.write_event(AudioStart(rate=rate, width=width, channels=channels).event())
        step = SAMPLES_PER_CHUNK * width * channels
        for offset in range(0, len(pcm), step):
            chunk = AudioChunk(
                rate=rate, width=width, channels=channels, audio=pcm[offset : offset + step]
            )
            await self.write_event(chunk.event())
        await self.write_event(AudioStop().event())


async def start(uri: str) -> AsyncServer:
    """Start serving on a tcp:// or unix:// URI; `await .stop()` ends it."""
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is not installed")
    server = AsyncServer.from_uri(uri)
    await server.start(TtsHandler)
    return server


if __name__ == "__main__":
    runner.main(__doc__.splitlines()[0], start, _LOGGER)
