"""Paraformer (ASR) and CosyVoice (TTS) clients against a loopback DashScope."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
import time

import aiohttp
import pytest

from custom_components.xiaozhi.cloud import SpeechAuthError, SpeechServiceError
from custom_components.xiaozhi.cloud.cosyvoice import (
    CosyVoiceClient,
    speech_rate,
    voices_for,
    volume,
)
from custom_components.xiaozhi.cloud.paraformer import (
    AUDIO_FRAME_BYTES,
    ParaformerClient,
    join_sentences,
    language_hint,
)
from tests.audio import tone
from tests.cloud_servers import (
    DASHSCOPE_KEY,
    HOST,
    TTS_BYTES_PER_CHAR,
    BlackHole,
    DashScopeServer,
    closed_port,
)

TIMEOUT_S = 5.0
SHORT_TIMEOUT_S = 0.5
WAIT_S = 10.0  # how long a test waits for something that must happen (never reached when it works)
CHUNK_S = 0.01  # HA hands STT audio over in 10 ms chunks


def paraformer(session: aiohttp.ClientSession, url: str, **kwargs: object) -> ParaformerClient:
    kwargs.setdefault("timeout", TIMEOUT_S)
    return ParaformerClient(session, DASHSCOPE_KEY, url=url, **kwargs)  # type: ignore[arg-type]


def cosyvoice(session: aiohttp.ClientSession, url: str, **kwargs: object) -> CosyVoiceClient:
    kwargs.setdefault("timeout", TIMEOUT_S)
    return CosyVoiceClient(session, DASHSCOPE_KEY, url=url, **kwargs)  # type: ignore[arg-type]


async def speech(seconds: float, server: DashScopeServer | None = None) -> AsyncIterator[bytes]:
    """Audio in 10 ms chunks; with a server, the end waits until the server has heard some."""
    pcm = tone(seconds, 16000)
    step = int(16000 * 2 * CHUNK_S)
    for start in range(0, len(pcm), step):
        yield pcm[start : start + step]
        await asyncio.sleep(0)
    if server is not None:  # the user is still speaking: audio must already be on its way
        await asyncio.wait_for(server.audio_seen.wait(), WAIT_S)


async def drain(stream: AsyncIterator[bytes]) -> None:
    async for _ in stream:
        pass


async def endless_speech() -> AsyncIterator[bytes]:
    while True:
        yield bytes(320)
        await asyncio.sleep(CHUNK_S)


async def test_paraformer_streams_audio_while_the_user_speaks(
    session: aiohttp.ClientSession, dashscope: DashScopeServer
) -> None:
    partials: list[str] = []
    text = await paraformer(session, dashscope.url).transcribe(
        speech(1.0, dashscope), language="zh-CN", on_partial=partials.append
    )

    assert text == "打开客厅的灯。谢谢。"
    assert dashscope.kinds() == ["run-task", "audio", "finish-task"]
    run_task = dashscope.log[0][1]
    assert run_task["model"] == "paraformer-realtime-v2"
    assert run_task["parameters"]["language_hints"] == ["zh"]
    frames = [size for kind, size in dashscope.log if kind == "audio"]
    assert sum(frames) == 32000
    assert all(size >= AUDIO_FRAME_BYTES for size in frames[:-1])  # 10 ms chunks joined up
    assert partials[0] == "打"  # interim results while audio was still arriving
    assert partials[-1] == "打开客厅的灯。谢谢。"


async def test_paraformer_task_failure_mid_speech(
    session: aiohttp.ClientSession, dashscope: DashScopeServer
) -> None:
    dashscope.fail_after_audio = ("ResponseTimeout", "the model is busy")
    with pytest.raises(SpeechServiceError, match="ResponseTimeout: the model is busy"):
        await asyncio.wait_for(
            paraformer(session, dashscope.url).transcribe(endless_speech()), WAIT_S
        )


async def test_paraformer_waits_no_longer_than_the_timeout(
    session: aiohttp.ClientSession, dashscope: DashScopeServer
) -> None:
    dashscope.stall_after_finish = True
    client = paraformer(session, dashscope.url, timeout=SHORT_TIMEOUT_S)
    start = time.monotonic()
    with pytest.raises(SpeechServiceError, match=r"did not finish within 0\.5 s"):
        await client.transcribe(speech(0.3))
    assert time.monotonic() - start >= SHORT_TIMEOUT_S


async def test_wrong_key_is_an_auth_error(
    session: aiohttp.ClientSession, dashscope: DashScopeServer
) -> None:
    client = ParaformerClient(session, "sk-wrong", url=dashscope.url, timeout=TIMEOUT_S)
    with pytest.raises(SpeechAuthError, match="401"):
        await client.transcribe(speech(0.1))
    assert dashscope.log == []


async def test_refused_connection(session: aiohttp.ClientSession) -> None:
    url = f"ws://{HOST}:{closed_port()}/api-ws/v1/inference"
    with pytest.raises(SpeechServiceError, match="Cannot reach DashScope"):
        await paraformer(session, url).transcribe(speech(0.1))


async def test_silent_service_fails_within_the_timeout(
    session: aiohttp.ClientSession, black_hole: BlackHole
) -> None:
    url = f"ws://{HOST}:{black_hole.port}/api-ws/v1/inference"
    client = cosyvoice(session, url, timeout=SHORT_TIMEOUT_S)
    start = time.monotonic()
    with pytest.raises(SpeechServiceError, match=r"did not answer within 0\.5 s"):
        await client.synthesize(_texts(["你好。"]))
    assert SHORT_TIMEOUT_S <= time.monotonic() - start < WAIT_S


async def _texts(pieces: list[str], gate: asyncio.Event | None = None) -> AsyncIterator[str]:
    """Text as an LLM writes it; with a gate, the last piece waits until audio has arrived."""
    for index, piece in enumerate(pieces):
        if gate is not None and index == len(pieces) - 1:
            await asyncio.wait_for(gate.wait(), WAIT_S)
        yield piece


async def test_cosyvoice_speaks_text_as_it_is_written(
    session: aiohttp.ClientSession, dashscope: DashScopeServer
) -> None:
    pieces = ["你好，", "我是小智。", "今天天气", "很好。"]
    first_audio = asyncio.Event()
    audio = bytearray()
    stream = await cosyvoice(session, dashscope.url).synthesize(
        _texts(pieces, first_audio), voice="longwan_v2", rate=1.2, volume=40
    )
    async for chunk in stream:
        first_audio.set()
        audio += chunk

    assert dashscope.texts() == pieces  # Chinese text arrives intact, piece by piece
    assert dashscope.kinds() == ["run-task", *["continue-task"] * 4, "finish-task"]
    assert len(audio) == len("".join(pieces)) * TTS_BYTES_PER_CHAR
    parameters = dashscope.log[0][1]["parameters"]
    assert parameters | {"voice": "longwan_v2", "rate": 1.2, "volume": 40} == parameters
    assert dashscope.log[0][1]["model"] == "cosyvoice-v2"


async def test_cosyvoice_task_failed_on_start(
    session: aiohttp.ClientSession, dashscope: DashScopeServer
) -> None:
    dashscope.fail_task = ("InvalidParameter", "voice not found")
    with pytest.raises(SpeechServiceError, match="InvalidParameter: voice not found"):
        await cosyvoice(session, dashscope.url).synthesize(_texts(["你好。"]), voice="nobody")


async def test_cosyvoice_text_stream_failure_ends_the_audio(
    session: aiohttp.ClientSession, dashscope: DashScopeServer
) -> None:
    async def failing_text() -> AsyncIterator[str]:
        yield "你好。"
        raise ValueError("the agent failed")

    stream = await cosyvoice(session, dashscope.url).synthesize(failing_text())
    with pytest.raises(ValueError, match="the agent failed"):
        await asyncio.wait_for(drain(stream), WAIT_S)


async def test_cosyvoice_waits_no_longer_than_the_timeout(
    session: aiohttp.ClientSession, dashscope: DashScopeServer
) -> None:
    dashscope.stall_after_finish = True
    stream = await cosyvoice(session, dashscope.url, timeout=SHORT_TIMEOUT_S).synthesize(
        _texts(["好的。"])
    )
    with pytest.raises(SpeechServiceError, match=r"did not finish within 0\.5 s"):
        await drain(stream)


def test_settings_and_text_helpers() -> None:
    assert speech_rate(0) == 1.0
    assert speech_rate(50) == 1.5
    assert speech_rate(-90) == 0.5
    assert volume(0) == 50
    assert volume(100) == 100
    assert volume(-50) == 25
    assert voices_for("zh-CN")[0].voice_id == "longxiaochun_v2"
    assert "loongeva_v2" in [v.voice_id for v in voices_for("en-US")]
    assert "longwan_v2" not in [v.voice_id for v in voices_for("en")]
    assert language_hint("zh-CN") == "zh"
    assert language_hint("zh-HK") == "yue"
    assert language_hint("pt-BR") is None
    assert join_sentences(["打开灯。", "谢谢。"]) == "打开灯。谢谢。"
    assert join_sentences(["Okay.", "Thanks."]) == "Okay. Thanks."
