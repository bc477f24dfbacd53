"""The Edge TTS client: edge-tts's own requests and parsing against a loopback Edge service."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
import time
from unittest.mock import patch

import pytest

from custom_components.xiaozhi.cloud import SpeechServiceError
from custom_components.xiaozhi.cloud.edge import (
    FALLBACK_VOICES,
    EdgeTtsClient,
    EdgeVoice,
    default_voice,
    format_pitch,
    format_rate,
    format_volume,
)
from tests.cloud_servers import HOST, BlackHole, EdgeServer, closed_port

TIMEOUT_S = 5.0
SHORT_TIMEOUT_S = 0.5
WAIT_S = 10.0


async def test_each_sentence_is_spoken_as_soon_as_it_is_complete(edge_server: EdgeServer) -> None:
    first_audio = asyncio.Event()
    order: list[str] = []

    async def reply() -> AsyncIterator[str]:
        for piece in ["你好，", "我是小智。", "今天天气"]:
            yield piece
        await asyncio.wait_for(first_audio.wait(), WAIT_S)  # the LLM is still writing
        order.append("last text")
        yield "很好。"

    audio = bytearray()
    client = EdgeTtsClient(timeout=TIMEOUT_S)
    async for chunk in client.stream(
        reply(), voice="zh-CN-YunxiNeural", rate="+10%", pitch="-5Hz", volume="+0%"
    ):
        if not first_audio.is_set():
            order.append("first audio")
            first_audio.set()
        audio += chunk

    assert order == ["first audio", "last text"]
    assert [request["text"] for request in edge_server.ssml] == [
        "你好，我是小智。",
        "今天天气很好。",
    ]
    assert (
        edge_server.ssml[0]
        | {
            "voice": "Microsoft Server Speech Text to Speech Voice (zh-CN, YunxiNeural)",
            "rate": "+10%",
            "pitch": "-5Hz",
            "volume": "+0%",
        }
        == edge_server.ssml[0]
    )
    assert bytes(audio) == edge_server.audio_for(
        ["你好，我是小智。", "今天天气很好。"]
    )  # whole, in order
    assert "Sec-MS-GEC" in edge_server.queries[0]  # the library built its own request


async def test_voice_list_is_fetched_once(edge_server: EdgeServer) -> None:
    client = EdgeTtsClient(timeout=TIMEOUT_S)
    assert client.voices == list(FALLBACK_VOICES)
    voices = await client.async_voices()
    assert EdgeVoice("ja-JP-NanamiNeural", "ja-JP", "Female") in voices
    assert voices[0].name == "Xiaoxiao (Female)"
    assert await client.async_voices() == voices
    assert edge_server.voice_list_requests == 1


async def test_voice_list_falls_back_when_unreachable(socket_enabled: None) -> None:
    url = f"http://{HOST}:{closed_port()}/voices/list?trustedclienttoken=x"
    client = EdgeTtsClient(timeout=TIMEOUT_S)
    with patch("edge_tts.voices.VOICE_LIST", url):
        assert await client.async_voices() == list(FALLBACK_VOICES)


async def test_refused_connection_fails_at_once(socket_enabled: None) -> None:
    client = EdgeTtsClient(timeout=TIMEOUT_S)
    with (
        patch("edge_tts.communicate.WSS_URL", f"ws://{HOST}:{closed_port()}/edge/v1?x=1"),
        pytest.raises(SpeechServiceError, match="Edge TTS failed"),
    ):
        async for _ in client.synthesize("你好", voice="zh-CN-XiaoxiaoNeural"):
            pass


@pytest.mark.parametrize("where", ["no answer to connect", "no answer to text"])
async def test_silent_service_fails_within_the_timeout(
    edge_server: EdgeServer, black_hole: BlackHole, where: str
) -> None:
    url = edge_server.wss_url
    if where == "no answer to connect":
        url = f"ws://{HOST}:{black_hole.port}/edge/v1?x=1"
    edge_server.stall = True
    client = EdgeTtsClient(timeout=SHORT_TIMEOUT_S)
    start = time.monotonic()
    with (
        patch("edge_tts.communicate.WSS_URL", url),
        pytest.raises(SpeechServiceError, match=r"did not answer within 0\.5 s"),
    ):
        async for _ in client.synthesize("你好", voice="zh-CN-XiaoxiaoNeural"):
            pass
    assert SHORT_TIMEOUT_S <= time.monotonic() - start < WAIT_S


def test_prosody_and_default_voices() -> None:
    assert format_rate(10) == "+10%"
    assert format_rate("-20%") == "-20%"
    assert format_rate(12.7) == "+12%"
    assert format_pitch(-5) == "-5Hz"
    assert format_pitch("+3Hz") == "+3Hz"
    assert format_volume(0) == "+0%"
    with pytest.raises(ValueError, match=r"outside -50\.\.100"):
        format_rate(150)
    with pytest.raises(ValueError, match="not a number of Hz"):
        format_pitch("loud")
    with pytest.raises(ValueError, match=r"outside -50\.\.100"):
        format_volume(-99)
    voices = list(FALLBACK_VOICES)
    assert default_voice("zh-CN", voices) == "zh-CN-XiaoxiaoNeural"
    assert default_voice("en-US", voices) == "en-US-EmmaMultilingualNeural"
    assert default_voice("ja-JP", [EdgeVoice("ja-JP-NanamiNeural", "ja-JP", "Female")]) == (
        "ja-JP-NanamiNeural"
    )
    assert default_voice("ja-JP", voices) is None
