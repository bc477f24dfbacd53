"""Tests for the JSON message models and parser."""

from __future__ import annotations

import json

import pytest

from custom_components.xiaozhi.core.errors import (
    MalformedMessageError,
    MessageTooBigError,
    UnknownMessageTypeError,
    UnsupportedAudioError,
)
from custom_components.xiaozhi.core.messages import (
    Abort,
    AudioParams,
    ClientHello,
    Listen,
    ListenMode,
    ListenState,
    Mcp,
    ServerHello,
    Tts,
    TtsState,
    parse_device_message,
    parse_server_message,
)

FIRMWARE_HELLO = {
    "type": "hello",
    "version": 3,
    "features": {"aec": True, "mcp": True, "glyph_push": True},
    "text_font": {"bundle": "noto-v1", "charset": "common", "size": 20, "bpp": 4},
    "transport": "websocket",
    "audio_params": {"format": "opus", "sample_rate": 16000, "channels": 1, "frame_duration": 60},
}


def test_firmware_hello_parses() -> None:
    hello = parse_device_message(json.dumps(FIRMWARE_HELLO))
    assert isinstance(hello, ClientHello)
    assert hello.version == 3
    assert hello.supports_mcp
    assert hello.audio_params == AudioParams("opus", 16000, 1, 60)
    assert hello.text_font == FIRMWARE_HELLO["text_font"]


def test_device_messages_parse() -> None:
    sid = {"session_id": "abc-1"}
    listen = parse_device_message(
        json.dumps(sid | {"type": "listen", "state": "start", "mode": "realtime"})
    )
    assert listen == Listen(state=ListenState.START, mode=ListenMode.REALTIME, session_id="abc-1")
    detect = parse_device_message(
        json.dumps({"type": "listen", "state": "detect", "text": "你好小智"})
    )
    assert isinstance(detect, Listen) and detect.text == "你好小智"
    abort = parse_device_message(json.dumps({"type": "abort", "reason": "wake_word_detected"}))
    assert abort == Abort(reason="wake_word_detected")
    mcp = parse_device_message(json.dumps({"type": "mcp", "payload": {"jsonrpc": "2.0", "id": 1}}))
    assert isinstance(mcp, Mcp) and mcp.payload["id"] == 1


def test_server_messages_round_trip_with_chinese_text() -> None:
    for message in (
        ServerHello(session_id="s-1"),
        Tts(state=TtsState.SENTENCE_START, text="好的，已为你打开客厅的灯。"),
        Tts(state=TtsState.STOP),
    ):
        text = message.to_json()
        assert "\\u" not in text  # UTF-8 kept as is for the device's display
        assert parse_server_message(text) == message


def test_server_hello_always_has_transport() -> None:
    wire = json.loads(ServerHello(session_id="s-1").to_json())
    assert wire["transport"] == "websocket"
    assert wire["audio_params"] == {
        "format": "opus",
        "sample_rate": 24000,
        "channels": 1,
        "frame_duration": 60,
    }


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("not json", MalformedMessageError),
        ("[1, 2]", MalformedMessageError),
        ('{"state": "start"}', MalformedMessageError),  # no type
        ('{"type": 5}', MalformedMessageError),
        ('{"type": "listen"}', MalformedMessageError),  # no state
        ('{"type": "listen", "state": "sing"}', MalformedMessageError),
        ('{"type": "listen", "state": "start", "mode": 3}', MalformedMessageError),
        ('{"type": "mcp", "payload": "{}"}', MalformedMessageError),  # payload must be an object
        ('{"type": "hello", "version": true}', MalformedMessageError),
        ('{"type": "iot", "descriptors": []}', UnknownMessageTypeError),
        (
            '{"type": "listen", "state": "start", "x": ' + "[" * 100 + "]" * 100 + "}",
            MalformedMessageError,
        ),
        ("[" * 100_000 + "]" * 100_000, MessageTooBigError),
        ('{"type": "listen", "state": "start", "pad": "' + "x" * 40_000 + '"}', MessageTooBigError),
        (b'{"type": "abort", "reason": "\xff\xfe"}', MalformedMessageError),
    ],
)
def test_bad_input_raises_typed_errors(text: str | bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_device_message(text)


def test_unknown_type_is_not_fatal() -> None:
    with pytest.raises(UnknownMessageTypeError) as info:
        parse_device_message('{"type": "ping"}')
    assert not info.value.fatal


def test_deep_nesting_within_size_limit_is_rejected() -> None:
    # 10,000 levels fit the size limit; json's C scanner would recurse deeply.
    deep = '{"type": "abort", "x": ' + "[" * 10_000 + "]" * 10_000 + "}"
    with pytest.raises(MalformedMessageError):
        parse_device_message(deep)


@pytest.mark.parametrize(
    "params",
    [
        {"format": "pcm"},
        {"sample_rate": 44100},
        {"channels": 2},
        {"frame_duration": 7},
    ],
)
def test_undecodable_audio_params(params: dict[str, object]) -> None:
    hello = parse_device_message(json.dumps(FIRMWARE_HELLO | {"audio_params": params}))
    assert isinstance(hello, ClientHello)
    with pytest.raises(UnsupportedAudioError):
        hello.audio_params.check_decodable()
