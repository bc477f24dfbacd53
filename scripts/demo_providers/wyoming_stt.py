"""Offline English speech-to-text over the Wyoming protocol, with pocketsphinx.

Decodes 16 kHz 16-bit mono PCM against a small grammar of Home Assistant style commands
(GRAMMAR below), using the acoustic model and dictionary that ship inside the pocketsphinx
wheel: nothing is downloaded. Run: python -m scripts.demo_providers.wyoming_stt --uri tcp://...
"""

from __future__ import annotations

import asyncio
from importlib.metadata import version
import logging
import threading
import time

import numpy as np
from pocketsphinx import Decoder  # type: ignore[import-untyped]
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioChunkConverter, AudioStart, AudioStop
from wyoming.event import Event
from wyoming.info import AsrModel, AsrProgram, Attribution, Describe, Info
from wyoming.server import AsyncEventHandler, AsyncServer

from scripts.demo_providers import runner

_LOGGER = logging.getLogger("wyoming_stt")

# What the recognizer can hear: sentences outside this JSGF grammar cannot be transcribed.
# Every word must be in pocketsphinx's bundled dictionary (cmudict-en-us.dict).
GRAMMAR = """
#JSGF V1.0;
grammar home;
public <command> = <power> | <brightness> | <question> | <cancel>;
<power> = turn (on | off) [the] <target> | turn [the] <target> (on | off);
<target> = <area> (light | lights) | (light | lights) in [the] <area> | <device>
         | all [the] lights;
<brightness> = set [the] <area> (light | lights) [brightness] to <number> percent;
<question> = what time is it | what is the time | what is the temperature [in [the] <area>];
<cancel> = cancel | never mind | stop;
<area> = kitchen | living room | bedroom | office | bathroom | hallway | garage | dining room;
<device> = fan | heater | television | radio | coffee maker;
<number> = ten | twenty | thirty | forty | fifty | sixty | seventy | eighty | ninety
         | one hundred;
"""

SAMPLE_RATE = 16000  # what the acoustic model expects (and what HA's wyoming STT sends)
# Audio conditioning before decoding. Synthetic speech (espeak-ng) has digitally silent gaps
# that the acoustic model's silence/filler models do not match, which derails the grammar
# search; a fixed, seeded bed of faint noise and some padding make it look like a microphone.
TARGET_PEAK = 16000.0  # normalise the loudest sample to about -6 dBFS
MAX_GAIN = 20.0
NOISE_LEVEL = 20.0  # standard deviation of the added noise, in 16-bit sample units
PAD_SECONDS = 0.3

INFO = Info(
    asr=[
        AsrProgram(
            name="pocketsphinx",
            attribution=Attribution(name="CMU Sphinx", url="https://cmusphinx.github.io"),
            installed=True,
            description="Offline English commands (pocketsphinx, restricted grammar)",
            version=version("pocketsphinx"),
            models=[
                AsrModel(
                    name="en-us-commands",
                    attribution=Attribution(
                        name="CMU Sphinx", url="https://github.com/cmusphinx/pocketsphinx"
                    ),
                    installed=True,
                    description="US English acoustic model with a Home Assistant command grammar",
                    version=version("pocketsphinx"),
                    languages=["en"],
                )
            ],
            requires_external_vad=True,
            prefers_auto_gain_enabled=False,
            prefers_noise_reduction_enabled=False,
        )
    ]
)


def condition(pcm: bytes) -> bytes:
    """Return the 16-bit PCM normalised, padded and mixed with faint seeded noise."""
    samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float64)
    if samples.size == 0:
        return b""
    samples -= samples.mean()
    peak = float(np.abs(samples).max())
    if peak > 0:
        samples *= min(TARGET_PEAK / peak, MAX_GAIN)
    pad = np.zeros(int(SAMPLE_RATE * PAD_SECONDS))
    samples = np.concatenate([pad, samples, pad])
    samples += np.random.default_rng(0).normal(0.0, NOISE_LEVEL, samples.size)
    return np.clip(samples, -32768, 32767).astype("<i2").tobytes()


class Recognizer:
    """A pocketsphinx decoder restricted to a JSGF grammar; one utterance at a time."""

    def __init__(self, grammar: str = GRAMMAR) -> None:
        """Load the bundled model and compile the grammar (about 0.1 s)."""
        self._decoder = Decoder(lm=None, loglevel="FATAL")
        self._decoder.add_jsgf_string("commands", grammar)
        self._decoder.activate_search("commands")
        self._lock = threading.Lock()

    def transcribe(self, pcm: bytes) -> str:
        """Return the words heard in 16 kHz 16-bit mono PCM ("" if nothing matched)."""
        audio = condition(pcm)
        if not audio:
            return ""
        with self._lock:
            self._decoder.start_utt()
            self._decoder.process_raw(audio, full_utt=True)
            self._decoder.end_utt()
            hyp = self._decoder.hyp()
        return str(hyp.hypstr) if hyp is not None else ""


class SttHandler(AsyncEventHandler):
    """One client connection: Describe -> Info; Transcribe, audio -> Transcript."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, recognizer: Recognizer
    ) -> None:
        """Serve one connection with a shared recognizer."""
        super().__init__(reader, writer)
        self._recognizer = recognizer
        self._converter = AudioChunkConverter(rate=SAMPLE_RATE, width=2, channels=1)
        self._audio = bytearray()

    async def handle_event(self, event: Event) -> bool:
        """Answer one event; keep the connection open."""
        if Describe.is_type(event.type):
            await self.write_event(INFO.event())
        elif Transcribe.is_type(event.type) or AudioStart.is_type(event.type):
            self._audio.clear()
            self._converter = AudioChunkConverter(rate=SAMPLE_RATE, width=2, channels=1)
        elif AudioChunk.is_type(event.type):
            self._audio += self._converter.convert(AudioChunk.from_event(event)).audio
        elif AudioStop.is_type(event.type):
            started = time.perf_counter()
            text = await asyncio.to_thread(self._recognizer.transcribe, bytes(self._audio))
            _LOGGER.debug(
                "%.2f s of audio -> %r in %.0f ms",
                len(self._audio) / (2 * SAMPLE_RATE),
                text,
                (time.perf_counter() - started) * 1000,
            )
            self._audio.clear()
            await self.write_event(Transcript(text=text, language="en").event())
        return True


async def start(uri: str) -> AsyncServer:
    """Load the model and start serving on a tcp:// or unix:// URI; `await .stop()` ends it."""
    recognizer = await asyncio.to_thread(Recognizer)
    server = AsyncServer.from_uri(uri)
    await server.start(lambda reader, writer: SttHandler(reader, writer, recognizer))
    return server


if __name__ == "__main__":
    runner.main(__doc__.splitlines()[0], start, _LOGGER)
