"""The side-by-side benchmark's pieces that need no reference server (CI has none)."""

from __future__ import annotations

import io
import wave

import aiohttp

from benchmarks.reference_fakes import TRANSCRIPT, MediaFakes, async_start
from benchmarks.reference_server import config
from benchmarks.report import format_goals, format_reference

from .llm_server import API_KEY
from .providers import REPLY_SECONDS_PER_CHAR, TTS_SAMPLE_RATE

SIDE_BY_SIDE = {
    "turns": 3,
    "hub_speech_end_to_first_frame_s": {"p50": 0.5, "p95": 0.6},
    "hub_vad_end_after_speech_s": {"p50": 0.47, "p95": 0.48},
    "reference_speech_end_to_first_frame_s": {"p50": 0.4, "p95": 0.5},
    "ratio_p50": 1.25,
    "ratio_p95": 1.2,
}


async def test_fakes_answer_as_the_reference_providers_ask(socket_enabled: None) -> None:
    """Its `openai` ASR uploads a WAV file; its `openai` TTS posts JSON and gets a WAV back."""
    fakes = MediaFakes()
    runner = await async_start(fakes)
    port = runner.addresses[0][1]
    headers = {"Authorization": f"Bearer {API_KEY}"}
    text = "Okay, the kitchen light is on."
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
            form = aiohttp.FormData({"model": "bench"})
            form.add_field("file", b"RIFF" + bytes(40), filename="asr.wav")
            async with http.post("/v1/audio/transcriptions", data=form, headers=headers) as r:
                assert await r.json() == {"text": TRANSCRIPT}
            speech = {"model": "tts-1", "input": text, "voice": "alloy", "response_format": "wav"}
            async with http.post("/v1/audio/speech", json=speech, headers=headers) as r:
                audio = await r.read()
            async with http.post("/v1/audio/speech", json=speech) as r:
                assert r.status == 401
    finally:
        await runner.cleanup()
    assert fakes.transcribed == [44]
    assert fakes.spoken == [text]
    with wave.open(io.BytesIO(audio)) as wav:
        assert wav.getframerate() == TTS_SAMPLE_RATE
        seconds = wav.getnframes() / TTS_SAMPLE_RATE
    assert abs(seconds - max(1.0, REPLY_SECONDS_PER_CHAR * len(text))) < 0.01


def test_reference_configuration_uses_its_silero_vad_and_loopback_fakes() -> None:
    """Every selected provider is configured, on loopback, with no model download."""
    body = config(8000, 8003, "http://127.0.0.1:8100/v1", "http://127.0.0.1:8101")
    selected = body["selected_module"]
    assert isinstance(selected, dict)
    assert selected["VAD"] == "SileroVAD"  # its own section in its config.yaml
    for kind in ("ASR", "LLM", "TTS"):
        section = body[kind]
        assert isinstance(section, dict)
        provider = section[selected[kind]]
        assert provider["type"] == "openai"
        urls = [value for key, value in provider.items() if "url" in key]
        assert urls
        assert all(url.startswith("http://127.0.0.1:") for url in urls)


def test_goals_use_the_measured_reference() -> None:
    """With a side-by-side run, goal 1 takes its ratio and goal 5 passes."""
    goals = format_goals({"reference": SIDE_BY_SIDE}).splitlines()
    goal1 = next(line for line in goals if line.startswith("goal 1 "))
    assert "measured side by side" in goal1
    assert "1.25x" in goal1
    assert goal1.endswith("MISS")
    assert next(line for line in goals if line.startswith("goal 5 ")).endswith("PASS")
    assert format_goals({}).splitlines()[-1].endswith("MISS")
    assert "1.25x (p50)" in format_reference(SIDE_BY_SIDE)
