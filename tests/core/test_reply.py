"""Where subtitles fall on a reply's audio (core/reply.py)."""

from __future__ import annotations

import pytest

from custom_components.xiaozhi.core.reply import SubtitleTrack, speech_weight


def test_chinese_weighs_more_per_character() -> None:
    assert speech_weight("你好") == 6
    assert speech_weight("hi, you!") == 5
    assert speech_weight("。") == 1  # never zero


def test_sentences_known_together_share_the_audio_by_length() -> None:
    """A reply not streamed: all text first, then all audio."""
    track = SubtitleTrack()
    track.add("Short one.")  # 8 letters
    track.add("This sentence is much longer.")  # 24 letters
    assert track.due(0.0) == ["Short one."]
    track.audio_s = 4.0
    assert track.due(3.9) == []  # the end of the stretch is not known yet: wait
    track.audio_ended = True
    assert track.due(0.9) == []
    assert track.due(1.0) == ["This sentence is much longer."]  # at 8 / 32 of 4 s
    assert not track


def test_streamed_sentences_start_where_the_audio_stood_when_their_text_completed() -> None:
    track = SubtitleTrack()
    track.add("First.")
    track.audio_s = 2.1  # the first sentence's audio arrived before the second's text ended
    track.add("Second one.")
    track.audio_s = 3.0
    track.add("Third.")
    assert track.due(0.0) == ["First."]
    assert track.due(2.0) == []
    assert track.due(2.1) == ["Second one."]
    assert track.due(2.99) == []
    assert track.due(3.0) == ["Third."]


@pytest.mark.parametrize("position", [0.0, 5.0])
def test_rest_returns_what_never_found_its_audio(position: float) -> None:
    track = SubtitleTrack()
    track.add("One.")
    track.add("Two.")
    track.due(position)
    assert track.rest() == ["Two."]
    assert not track
