"""Reply audio as PCM for a device: from HA's TTS streams, or any media URL through ffmpeg."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
import contextlib
import logging
from typing import Final

from homeassistant.components import tts
from homeassistant.components.ffmpeg import get_ffmpeg_manager
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError

from .const import DOMAIN
from .core.codec import samples_per_frame
from .core.const import SAMPLE_WIDTH
from .core.errors import CodecError
from .core.resample import PcmConverter
from .core.wav import WavStreamReader

_LOGGER = logging.getLogger(__name__)

FFMPEG_READ_BYTES: Final = samples_per_frame(24000, 60) * SAMPLE_WIDTH
FFMPEG_STOP_TIMEOUT_S: Final = 2.0


# Only the container is asked for: any rate, channel count or sample size asked for on top makes
# HA run ffmpeg on every reply, even when the engine already speaks WAV. The rate is converted here.
TTS_OPTIONS: Final = {tts.ATTR_PREFERRED_FORMAT: "wav"}


async def tts_pcm(hass: HomeAssistant, token: str, sample_rate: int) -> AsyncIterator[bytes]:
    """Yield the PCM of a TTS result stream at `sample_rate`, mono, as it is synthesized."""
    stream = tts.async_get_stream(hass, token)
    if stream is None:
        raise HomeAssistantError(
            translation_domain=DOMAIN,
            translation_key="tts_stream_missing",
            translation_placeholders={"token": token},
        )
    reader = WavStreamReader()
    converter: PcmConverter | None = None
    try:
        async for data in stream.async_stream_result():
            if not (pcm := reader.push(data)):
                continue
            if converter is None:
                converter = PcmConverter(reader.sample_rate, reader.channels, sample_rate)
            if pcm := converter.convert(pcm):
                yield pcm
    except CodecError as err:
        raise HomeAssistantError(
            translation_domain=DOMAIN,
            translation_key="tts_audio_unusable",
            translation_placeholders={"error": str(err)},
        ) from err


async def url_pcm(hass: HomeAssistant, url: str, sample_rate: int) -> AsyncIterator[bytes]:
    """Yield 16-bit mono PCM of any media URL, converted by HA's ffmpeg."""
    process = await asyncio.create_subprocess_exec(
        get_ffmpeg_manager(hass).binary,
        "-nostdin",
        "-loglevel",
        "error",
        "-i",
        url,
        "-f",
        "s16le",
        "-ac",
        "1",
        "-ar",
        str(sample_rate),
        "-map_metadata",
        "-1",
        "-vn",
        "pipe:1",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    try:
        while chunk := await process.stdout.read(FFMPEG_READ_BYTES):
            yield chunk
        if await process.wait() != 0:
            error = (await process.stderr.read()).decode(errors="replace").strip()
            raise HomeAssistantError(
                translation_domain=DOMAIN,
                translation_key="media_convert_failed",
                translation_placeholders={"url": url, "error": error[:200]},
            )
    finally:
        if process.returncode is None:
            process.kill()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FFMPEG_STOP_TIMEOUT_S):
                    await process.wait()
