"""The demo's offline Wyoming providers, spoken to over loopback with wyoming's own client.

espeak-ng (the TTS server) speaks a command; pocketsphinx (the STT server) must hear it back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
import io
from pathlib import Path
import socket
import sys
import time
from types import ModuleType
import wave

from homeassistant.components import stt
from homeassistant.components.tts.helper import get_engine_instance
from homeassistant.core import HomeAssistant
from homeassistant.setup import async_setup_component
import numpy as np
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe, Info
from wyoming.server import AsyncServer
from wyoming.tts import Synthesize, SynthesizeVoice

from scripts.demo_providers import wyoming_stt, wyoming_tts

HOST = "127.0.0.1"
CHINESE_REPLY = "好的，已为你打开厨房的灯。"


@dataclass
class Providers:
    stt_port: int
    tts_port: int


@dataclass
class Speech:
    rate: int
    pcm: bytes

    @property
    def seconds(self) -> float:
        return len(self.pcm) / (2 * self.rate)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


async def _handlers_done() -> None:
    """Wait until the servers' per-connection tasks have ended (no lingering tasks)."""
    for _ in range(200):
        if not [t for t in asyncio.all_tasks() if t.get_name() == "wyoming event handler"]:
            return
        await asyncio.sleep(0.01)


@pytest.fixture
async def providers(socket_enabled: None) -> AsyncIterator[Providers]:
    """Run both servers in this event loop on free loopback ports."""
    stt_port, tts_port = free_port(), free_port()
    servers: list[AsyncServer] = [
        await wyoming_stt.start(f"tcp://{HOST}:{stt_port}"),
        await wyoming_tts.start(f"tcp://{HOST}:{tts_port}"),
    ]
    yield Providers(stt_port, tts_port)
    for server in servers:
        await server.stop()
    await _handlers_done()


async def read_until(client: AsyncTcpClient, *types: str) -> Event:
    while True:
        event = await asyncio.wait_for(client.read_event(), 30)
        assert event is not None, "server closed the connection"
        assert not Error.is_type(event.type), Error.from_event(event).text
        if event.type in types:
            return event


async def describe(port: int) -> Info:
    async with AsyncTcpClient(HOST, port) as client:
        await client.write_event(Describe().event())
        return Info.from_event(await read_until(client, "info"))


async def speak(port: int, text: str, voice: SynthesizeVoice | None = None) -> Speech:
    """Ask the TTS server for speech the way HA's wyoming tts does; return its PCM."""
    async with AsyncTcpClient(HOST, port) as client:
        await client.write_event(Synthesize(text=text, voice=voice).event())
        start = AudioStart.from_event(await read_until(client, "audio-start"))
        assert (start.width, start.channels) == (2, 1)
        pcm = bytearray()
        while not AudioStop.is_type(
            (event := await read_until(client, "audio-chunk", "audio-stop")).type
        ):
            chunk = AudioChunk.from_event(event)
            assert (chunk.rate, chunk.width, chunk.channels) == (start.rate, 2, 1)
            pcm += chunk.audio
        return Speech(start.rate, bytes(pcm))


async def transcribe(port: int, speech: Speech) -> str:
    """Send speech the way HA's wyoming stt does (Transcribe, audio, stop); return the text."""
    async with AsyncTcpClient(HOST, port) as client:
        await client.write_event(Transcribe(language="en").event())
        await client.write_event(AudioStart(rate=speech.rate, width=2, channels=1).event())
        step = 2 * 1024
        for offset in range(0, len(speech.pcm), step):
            chunk = AudioChunk(
                rate=speech.rate, width=2, channels=1, audio=speech.pcm[offset : offset + step]
            )
            await client.write_event(chunk.event())
        await client.write_event(AudioStop().event())
        return Transcript.from_event(await read_until(client, "transcript")).text


async def to_16k(speech: Speech) -> Speech:
    """Resample to 16 kHz mono with ffmpeg, as the demo's device path does."""
    rate = str(speech.rate)
    args = ["-f", "s16le", "-ar", rate, "-ac", "1", "-i", "-", "-ar", "16000", "-f", "s16le", "-"]
    proc = await asyncio.create_subprocess_exec(
        "ffmpeg",
        "-loglevel",
        "error",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate(speech.pcm)
    assert proc.returncode == 0
    return Speech(16000, out)


def rms(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0


async def test_describe(providers: Providers) -> None:
    stt_info = await describe(providers.stt_port)
    assert [program.installed for program in stt_info.asr] == [True]
    assert stt_info.asr[0].models[0].languages == ["en"]
    assert not stt_info.tts
    tts_info = await describe(providers.tts_port)
    assert not tts_info.asr
    voices = {voice.name: voice.languages for voice in tts_info.tts[0].voices}
    assert "en" in voices["en-us"]
    assert "zh-CN" in voices["cmn"]


@pytest.mark.parametrize(
    "command",
    ["turn on the kitchen light", "turn off the living room light", "what time is it"],
)
async def test_spoken_command_round_trip(providers: Providers, command: str) -> None:
    started = time.perf_counter()
    speech = await speak(providers.tts_port, command)
    tts_ms = (time.perf_counter() - started) * 1000
    assert speech.rate == 22050
    assert 0.8 < speech.seconds < 4

    speech16 = await to_16k(speech)
    started = time.perf_counter()
    text = await transcribe(providers.stt_port, speech16)
    stt_ms = (time.perf_counter() - started) * 1000
    print(f"{command!r}: TTS {tts_ms:.0f} ms, STT {stt_ms:.0f} ms for {speech16.seconds:.2f} s")
    assert text.lower() == command


async def test_stt_resamples_other_formats(providers: Providers) -> None:
    """Audio at another rate (here the TTS's 22050 Hz) is converted by the server itself."""
    speech = await speak(providers.tts_port, "turn on the kitchen light")
    assert (await transcribe(providers.stt_port, speech)).lower() == "turn on the kitchen light"


async def test_stt_silence_is_not_a_command(providers: Providers) -> None:
    assert await transcribe(providers.stt_port, Speech(16000, bytes(32000))) == ""
    assert await transcribe(providers.stt_port, Speech(16000, b"")) == ""


async def test_chinese_speech(providers: Providers) -> None:
    """Chinese text gets the Mandarin voice: by its script, by voice name or by language."""
    mandarin = await speak(providers.tts_port, CHINESE_REPLY, SynthesizeVoice(name="cmn"))
    assert mandarin.rate == 22050
    assert 1.5 < mandarin.seconds < 8  # 12 syllables and two pauses
    assert rms(mandarin.pcm) > 500  # speech, not silence
    # espeak-ng is deterministic: the same voice gives the same samples.
    assert (await speak(providers.tts_port, CHINESE_REPLY)).pcm == mandarin.pcm
    by_language = await speak(providers.tts_port, CHINESE_REPLY, SynthesizeVoice(language="zh-CN"))
    assert by_language.pcm == mandarin.pcm
    english = await speak(providers.tts_port, CHINESE_REPLY, SynthesizeVoice(name="en-us"))
    assert english.pcm != mandarin.pcm


async def test_through_home_assistants_wyoming_integration(
    hass: HomeAssistant, providers: Providers
) -> None:
    """The demo's path: HA's own wyoming entries, stt and tts entities, talking to the servers."""
    assert await async_setup_component(hass, "homeassistant", {})  # conversation needs it
    entries = [
        MockConfigEntry(domain="wyoming", data={"host": HOST, "port": port}, title=name)
        for name, port in (("stt", providers.stt_port), ("tts", providers.tts_port))
    ]
    for entry in entries:
        entry.add_to_hass(hass)
        assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    tts_entity = get_engine_instance(hass, "tts.espeak_ng")
    stt_entity = stt.async_get_speech_to_text_entity(hass, "stt.pocketsphinx")
    assert tts_entity is not None
    assert stt_entity is not None
    assert tts_entity.default_language == "en"
    assert stt_entity.supported_languages == ["en"]

    extension, data = await tts_entity.async_get_tts_audio("turn on the kitchen light", "en", {})
    assert extension == "wav"
    assert data is not None
    with wave.open(io.BytesIO(data)) as wav:
        speech = Speech(wav.getframerate(), wav.readframes(wav.getnframes()))
    speech16 = await to_16k(speech)

    async def stream() -> AsyncIterator[bytes]:
        for offset in range(0, len(speech16.pcm), 1920):  # 60 ms frames, like a device
            yield speech16.pcm[offset : offset + 1920]

    metadata = stt.SpeechMetadata(
        language="en",
        format=stt.AudioFormats.WAV,
        codec=stt.AudioCodecs.PCM,
        bit_rate=stt.AudioBitRates.BITRATE_16,
        sample_rate=stt.AudioSampleRates.SAMPLERATE_16000,
        channel=stt.AudioChannels.CHANNEL_MONO,
    )
    result = await stt_entity.async_process_audio_stream(metadata, stream())
    assert result.result is stt.SpeechResultState.SUCCESS
    assert result.text == "turn on the kitchen light"

    _extension, chinese = await tts_entity.async_get_tts_audio(CHINESE_REPLY, "zh-CN", {})
    assert chinese is not None
    assert len(chinese) > 44 + 2 * 22050  # over a second of audio after the WAV header
    for entry in entries:
        assert await hass.config_entries.async_unload(entry.entry_id)


def test_pick_voice() -> None:
    pick = wyoming_tts.pick_voice
    assert pick("turn on the light") == "en-us"
    assert pick(CHINESE_REPLY) == "cmn"
    assert pick("hello", language="zh-Hans") == "cmn"
    assert pick("hello", name="zh") == "cmn"
    assert pick("hello", language="en-GB") == "en-gb"
    assert pick(CHINESE_REPLY, name="en-us") == "en-us"  # an explicit voice wins


@pytest.mark.parametrize("module", [wyoming_stt, wyoming_tts], ids=["stt", "tts"])
async def test_runs_as_a_script(socket_enabled: None, module: ModuleType) -> None:
    """`python -m scripts.demo_providers.wyoming_xxx --uri tcp://...` logs a ready line, then
    answers Describe (as `scripts/demo` starts them)."""
    uri = f"tcp://{HOST}:{free_port()}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module.__name__,
        "--uri",
        uri,
        cwd=Path(__file__).parent.parent,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        line = await asyncio.wait_for(proc.stderr.readline(), 30)
        assert f"ready on {uri}" in line.decode()
        info = await describe(int(uri.rsplit(":", 1)[1]))
        assert [program.name for program in info.asr + info.tts] == [
            "pocketsphinx" if module is wyoming_stt else "espeak-ng"
        ]
    finally:
        proc.terminate()
        await proc.wait()
