"""Tests for sentence splitting and incremental WAV parsing."""

from __future__ import annotations

import io
import struct
import wave

import pytest

from custom_components.xiaozhi.core.errors import CodecError
from custom_components.xiaozhi.core.sentences import SentenceSplitter, split_sentences
from custom_components.xiaozhi.core.wav import WavStreamReader


def test_chinese_sentences() -> None:
    assert split_sentences("好的，已为你打开厨房的灯。还有什么需要吗？没有了！") == [
        "好的，已为你打开厨房的灯。",
        "还有什么需要吗？",
        "没有了！",
    ]


def test_long_clause_breaks_at_chinese_comma() -> None:
    text = "今天北京的天气晴朗，气温二十五度，适合出门散步；记得多喝水"
    assert split_sentences(text) == [
        "今天北京的天气晴朗，气温二十五度，",
        "适合出门散步；",
        "记得多喝水",
    ]


def test_english_periods() -> None:
    assert split_sentences("It is 3.5 degrees. Turned on the light! OK?") == [
        "It is 3.5 degrees.",
        "Turned on the light!",
        "OK?",
    ]


def test_streamed_deltas() -> None:
    splitter = SentenceSplitter()
    out: list[str] = []
    for delta in ["Turned on", " the light.", " It is 3", ".5 degrees", ". Bye"]:
        out += splitter.push(delta)
    assert out == ["Turned on the light.", "It is 3.5 degrees."]
    assert splitter.flush() == "Bye"
    quoted = SentenceSplitter()
    assert quoted.push("他说：“开灯。”然后") == ["他说：“开灯。”"]


def wav_bytes(pcm: bytes, rate: int = 24000, data_size: int | None = None) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)
    data = buffer.getvalue()
    if data_size is not None:  # what streaming writers put there
        data = data[:40] + struct.pack("<I", data_size) + data[44:]
    return data


@pytest.mark.parametrize("data_size", [None, 0, 0xFFFFFFFF])
def test_wav_stream_byte_by_byte(data_size: int | None) -> None:
    pcm = bytes(range(256)) * 8
    reader = WavStreamReader()
    out = b"".join(reader.push(bytes([b])) for b in wav_bytes(pcm, data_size=data_size))
    assert out == pcm
    assert (reader.sample_rate, reader.channels, reader.sample_width) == (24000, 1, 2)


def test_wav_with_extra_chunk() -> None:
    data = wav_bytes(b"\x01\x02" * 10)
    list_chunk = b"LIST" + struct.pack("<I", 5) + b"abcde\x00"  # odd size: padded
    data = data[:36] + list_chunk + data[36:]
    assert WavStreamReader().push(data) == b"\x01\x02" * 10


def test_not_wav() -> None:
    with pytest.raises(CodecError):
        WavStreamReader().push(b"ID3\x04" + b"\x00" * 20)


def test_whole_file_in_one_piece() -> None:
    """A cached reply arrives as one chunk far larger than any header."""
    pcm = b"\x01\x02" * 100_000
    assert WavStreamReader().push(wav_bytes(pcm)) == pcm


def test_endless_header_is_refused() -> None:
    junk = b"JUNK" + struct.pack("<I", 0x7FFFFFFF)
    reader = WavStreamReader()
    reader.push(b"RIFF\xff\xff\xff\xffWAVE" + junk)
    for _ in range(15):
        reader.push(b"\x00" * 4096)  # 60 KiB: still a plausible header
    with pytest.raises(CodecError, match="too large"):
        reader.push(b"\x00" * 8192)
