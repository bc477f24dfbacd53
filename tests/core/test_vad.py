"""Tests for the end-of-speech detector, with real (synthesized) speech."""

from __future__ import annotations

import numpy as np
import pytest

from custom_components.xiaozhi.core.emulator import speech_pcm
from custom_components.xiaozhi.core.vad import (
    TRAILING_SILENCE_S,
    EndpointEvent,
    SpeechEndpointer,
)

RATE = 16000
FRAME_BYTES = 1920  # what the device sends: 60 ms
VOICE_LEVEL = 500  # |sample| above this is voice, for measuring where speech really ends
rng = np.random.default_rng(7)


def say(text: str, voice: str = "en-us") -> np.ndarray:
    """Speak with espeak-ng, as 16 kHz 16-bit mono, trimmed to the voice."""
    audio = np.frombuffer(speech_pcm(text, voice), dtype="<i2")
    voiced = np.nonzero(np.abs(audio) > VOICE_LEVEL)[0]
    return audio[voiced[0] : voiced[-1] + 1]


def room(seconds: float) -> np.ndarray:
    """Faint background noise: a microphone never gives digital silence."""
    return rng.normal(0, 30, int(seconds * RATE)).astype("<i2")


def run(endpointer: SpeechEndpointer, audio: np.ndarray) -> list[tuple[EndpointEvent, float]]:
    """Feed audio in device-sized chunks; return the events with the stream time they came at."""
    data = audio.tobytes()
    events = []
    for offset in range(0, len(data), FRAME_BYTES):
        if (event := endpointer.process(data[offset : offset + FRAME_BYTES])) is not None:
            events.append((event, endpointer.audio_s))
        if endpointer.done:
            break
    return events


@pytest.fixture(scope="module")
def command() -> np.ndarray:
    return say("turn on the kitchen light")


@pytest.mark.parametrize("sensitivity", list(TRAILING_SILENCE_S))
def test_end_of_speech_comes_right_after_the_speech(command: np.ndarray, sensitivity: str) -> None:
    lead = 0.5
    audio = np.concatenate([room(lead), command, room(3.0)])
    speech_ends = lead + len(command) / RATE
    events = run(SpeechEndpointer(TRAILING_SILENCE_S[sensitivity]), audio)
    kinds = [event for event, _ in events]
    assert kinds == [EndpointEvent.SPEECH_START, EndpointEvent.SPEECH_END]
    assert lead < events[0][1] < speech_ends
    latency = events[1][1] - speech_ends
    trailing = TRAILING_SILENCE_S[sensitivity]
    # The end comes within one device frame of the chosen trailing silence.
    assert trailing - 0.02 <= latency <= trailing + 0.08


def test_default_beats_the_reference_server_and_ha(command: np.ndarray) -> None:
    """The reference server ends ~0.43 s after speech; HA's pipeline ~1.0 s (measured here)."""
    audio = np.concatenate([room(0.5), command, room(3.0)])
    endpointer = SpeechEndpointer(TRAILING_SILENCE_S["default"])
    events = run(endpointer, audio)
    assert events[-1][0] is EndpointEvent.SPEECH_END
    assert events[-1][1] - (0.5 + len(command) / RATE) < 0.43


@pytest.mark.parametrize("sensitivity", list(TRAILING_SILENCE_S))
def test_a_300_ms_pause_does_not_end_the_command(sensitivity: str) -> None:
    first = say("could you please turn on the light in the")
    second = say("kitchen")
    audio = np.concatenate([room(0.5), first, room(0.3), second, room(3.0)])
    second_ends = (len(audio) - 3.0 * RATE) / RATE
    events = run(SpeechEndpointer(TRAILING_SILENCE_S[sensitivity]), audio)
    assert events[-1][0] is EndpointEvent.SPEECH_END
    assert events[-1][1] > second_ends  # not cut at the pause


def test_chinese_speech() -> None:
    command = say("打开厨房的灯", "cmn")
    audio = np.concatenate([room(0.5), command, room(3.0)])
    events = run(SpeechEndpointer(), audio)
    assert [event for event, _ in events] == [EndpointEvent.SPEECH_START, EndpointEvent.SPEECH_END]
    assert events[1][1] - (0.5 + len(command) / RATE) < 0.5


def test_silence_gives_no_speech_only_after_the_timeout() -> None:
    endpointer = SpeechEndpointer(no_speech_timeout_s=2.0)
    events = run(endpointer, np.concatenate([room(1.9)]))
    assert events == []
    events = run(endpointer, room(0.3))
    assert [event for event, _ in events] == [EndpointEvent.NO_SPEECH]
    assert events[0][1] == pytest.approx(2.0, abs=0.07)
    assert endpointer.process(room(1.0).tobytes()) is None  # done until reset
    endpointer.reset()
    assert not endpointer.done


def test_loud_noise_alone_is_not_speech() -> None:
    noise = rng.normal(0, 3000, 3 * RATE).astype("<i2")
    events = run(SpeechEndpointer(no_speech_timeout_s=2.5), noise)
    assert [event for event, _ in events] == [EndpointEvent.NO_SPEECH]
