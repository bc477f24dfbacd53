"""The firmware's listening modes and what other clients do, through a real HA pipeline.

Each test drives the emulator the way the firmware (or a third-party client) behaves on the wire:
realtime mode sends one `listen start` and keeps its microphone open for good; push-to-talk holds
the button through pauses; py-xiaozhi streams 20 ms frames; clients type text as `listen detect`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from homeassistant.const import STATE_OFF, STATE_ON
from homeassistant.core import HomeAssistant
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.xiaozhi.core.const import PLAYBACK_LEAD_FRAMES, TTS_STOP_GRACE_S
from custom_components.xiaozhi.core.messages import EMOTION_EMOJI, ListenMode
from tools.emulator import DeviceEmulator

from .conftest import make_hub_entry
from .providers import REPLY_SECONDS_PER_CHAR, Providers, async_use_streaming

type MakeDevice = Callable[..., Coroutine[Any, Any, DeviceEmulator]]
FRAME_S = 0.06
HELD_SILENCE_S = 2.5  # a long pause while the push-to-talk button is still held


@pytest.fixture
def hub_entry(providers: Providers) -> MockConfigEntry:
    """The hub, set up after the providers (their HTTP views must exist before the server)."""
    return make_hub_entry()


def count(device: DeviceEmulator, kind: str, state: str | None = None) -> int:
    return len(device.received.of_type(kind, state))


async def test_realtime_answers_turn_after_turn_on_one_listen_start(
    hass: HomeAssistant, providers: Providers, make_device: MakeDevice, speech: bytes
) -> None:
    device = await make_device(listen_mode=ListenMode.REALTIME)
    await device.connect()
    mic = device.start_microphone(noise=30)
    await device.listen_start()
    await mic.say(speech)
    first = await device.wait_for("stt")
    await device.wait_for("tts", "stop")
    assert first["text"] == "turn on the kitchen light"
    assert hass.states.get(providers.light.entity_id).state == STATE_ON

    # No new `listen start` (the firmware sends none in realtime mode): the open microphone's
    # next utterance is the next turn.
    await hass.services.async_call(
        "light", "turn_off", {"entity_id": providers.light.entity_id}, blocking=True
    )
    await asyncio.sleep(0.5)
    before = len(device.received.messages)
    await mic.say(speech)
    second = await device.wait_for("stt", after=before)
    await device.wait_for("tts", "stop", after=before)
    assert second["text"] == "turn on the kitchen light"
    assert hass.states.get(providers.light.entity_id).state == STATE_ON
    assert len(device.received.of_type("stt")) == 2
    sent = [m for _, m in device.sent_messages if m.get("type") == "listen"]
    assert [m.get("state") for m in sent] == ["start"]
    assert not device.closed


async def test_push_to_talk_waits_for_release(
    hass: HomeAssistant, providers: Providers, make_device: MakeDevice, speech: bytes
) -> None:
    device = await make_device(listen_mode=ListenMode.MANUAL)
    await device.connect()
    mic = device.start_microphone(noise=30)
    await device.listen_start()
    half = len(speech) // 2 // 2 * 2
    await mic.say(speech[:half])
    await asyncio.sleep(HELD_SILENCE_S)  # the button is still held: room noise, no speech
    assert count(device, "stt") == 0
    await mic.say(speech[half:])
    await asyncio.sleep(HELD_SILENCE_S)
    assert count(device, "stt") == 0, "answered before the button was released"
    await device.listen_stop()
    heard = await device.wait_for("stt")
    await device.wait_for("tts", "stop")
    # Nothing said before or after the pauses is lost.
    assert heard["text"] == "turn on the kitchen light"
    assert count(device, "stt") == 1
    assert hass.states.get(providers.light.entity_id).state == STATE_ON
    await mic.stop()


async def test_20_ms_frames_make_a_full_turn(
    hass: HomeAssistant, providers: Providers, make_device: MakeDevice, speech: bytes
) -> None:
    device = await make_device(frame_duration=20)
    hello = await device.connect()
    assert hello is not None
    mic = device.start_microphone(noise=30)
    await device.listen_start(ListenMode.AUTO)
    await mic.say(speech)
    assert (await device.wait_for("stt"))["text"] == "turn on the kitchen light"
    await device.wait_for("tts", "stop")
    assert mic.sent > 3 * len(speech) // 640 // 4  # 20 ms frames, well over the old 25/s cap
    assert not device.closed
    assert hass.states.get(providers.light.entity_id).state == STATE_ON


async def test_typed_text_runs_a_turn_from_the_agent(
    hass: HomeAssistant, providers: Providers, make_device: MakeDevice
) -> None:
    device = await make_device()
    await device.connect()
    assert hass.states.get(providers.light.entity_id).state == STATE_OFF
    await device.send_text_input("turn on the kitchen light")
    shown = await device.wait_for("stt")
    await device.wait_for("tts", "stop")
    assert shown["text"] == "turn on the kitchen light"
    assert hass.states.get(providers.light.entity_id).state == STATE_ON
    assert device.received.audio, "the answer was not spoken"
    assert providers.stt.received == []  # no speech-to-text ran


async def test_wake_word_detect_is_not_typed_text(
    hass: HomeAssistant, providers: Providers, make_device: MakeDevice, speech: bytes
) -> None:
    """The firmware's `detect` is followed at once by `listen start`: a wake word, not text."""
    device = await make_device()
    await device.connect()
    mic = device.start_microphone(noise=30)
    await device.send_text_input("你好小智")
    await device.listen_start(ListenMode.AUTO)
    await mic.say(speech)
    await device.wait_for("tts", "stop")
    assert [m["text"] for m in device.received.of_type("stt")] == ["turn on the kitchen light"]


async def test_every_message_carries_the_session_and_llm_its_emoji(
    hass: HomeAssistant, providers: Providers, make_device: MakeDevice, speech: bytes
) -> None:
    device = await make_device()
    hello = await device.connect()
    assert hello is not None
    mic = device.start_microphone(noise=30)
    await device.listen_start(ListenMode.AUTO)
    await mic.say(speech)
    await device.wait_for("tts", "stop")
    messages = [m for _, m in device.received.messages]
    assert {m.get("session_id") for m in messages} == {hello.session_id}
    llm = device.received.of_type("llm")
    assert llm and all(m["text"] == EMOTION_EMOJI[m["emotion"]] for m in llm)
    # `tts stop` leaves the client's buffer time to play out: the lead it holds, and a grace.
    stop_at = next(t for t, m in device.received.messages if m.get("state") == "stop")
    last_frame_at = device.received.audio[-1][0]
    assert stop_at - last_frame_at >= PLAYBACK_LEAD_FRAMES * FRAME_S + TTS_STOP_GRACE_S - 0.05


async def test_subtitles_follow_the_audio_of_a_streamed_reply(
    hass: HomeAssistant, providers: Providers, make_device: MakeDevice, speech: bytes
) -> None:
    """Each `sentence_start` goes out just before the first frame of its sentence."""
    await async_use_streaming(hass, providers)
    device = await make_device()
    await device.connect()
    mic = device.start_microphone(noise=30)
    await device.listen_start(ListenMode.AUTO)
    await mic.say(speech)
    await device.wait_for("tts", "stop")
    subtitles = [
        (t, m["text"]) for t, m in device.received.messages if m.get("state") == ("sentence_start")
    ]
    assert [text for _, text in subtitles] == providers.streaming_tts.messages
    assert len(subtitles) == 3
    frames = [t for t, _ in device.received.audio]
    starts_s = 0.0
    for shown_at, text in subtitles:
        first_frame = round(starts_s / FRAME_S)  # the sentence's audio starts at this frame
        # Shown after the previous sentence's frames went out, before its own first frame.
        if first_frame > 0:
            assert shown_at >= frames[first_frame - 2], text
        assert shown_at <= frames[min(first_frame, len(frames) - 1)] + 0.01, text
        starts_s += REPLY_SECONDS_PER_CHAR * len(text)
