"""Instant loopback fakes of the reference server's ASR and TTS services (the LLM is ours).

Its `openai` ASR posts the utterance as a WAV file and reads `{"text": ...}`; its `openai` TTS
posts the text and reads the audio file. The TTS answers with the same tone as the hub's test
TTS (`tests/providers.py`, cached once made), so both servers send replies of the same length.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import io
import wave

from aiohttp import web

from tests.audio import tone
from tests.llm_server import API_KEY
from tests.providers import REPLY_SECONDS_PER_CHAR, TTS_SAMPLE_RATE

TRANSCRIPT = "turn on the kitchen light"


@dataclass
class MediaFakes:
    """What the fakes were asked: audio bytes transcribed, texts spoken."""

    transcribed: list[int] = field(default_factory=list)
    spoken: list[str] = field(default_factory=list)

    async def _transcribe(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {API_KEY}":
            return web.Response(status=401)
        form = await request.post()
        upload = form.get("file")
        self.transcribed.append(len(upload.file.read()) if hasattr(upload, "file") else 0)
        return web.json_response({"text": TRANSCRIPT})

    async def _speak(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {API_KEY}":
            return web.Response(status=401)
        text = str((await request.json())["input"])
        self.spoken.append(text)
        buffer = io.BytesIO()
        with wave.open(buffer, "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(TTS_SAMPLE_RATE)
            wav.writeframes(tone(max(1.0, REPLY_SECONDS_PER_CHAR * len(text)), TTS_SAMPLE_RATE))
        return web.Response(body=buffer.getvalue(), content_type="audio/wav")


async def async_start(fakes: MediaFakes, port: int = 0) -> web.AppRunner:
    """Serve the fakes on 127.0.0.1:`port`."""
    app = web.Application()
    app.router.add_post("/v1/audio/transcriptions", fakes._transcribe)
    app.router.add_post("/v1/audio/speech", fakes._speak)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner
