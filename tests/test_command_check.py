"""The early end of a turn: at a short pause, a command that is already whole ends the turn.

Real HA: the device's Assistant transcribes the audio so far with its own STT engine (the test
engine, which transcribes the words whose voice it heard) and HA's built-in recognizer matches
the words. Commands are espeak-ng speech with a 300 ms pause inside, in English and Mandarin,
in a quiet room and at ~20 and ~10 dB SNR, streamed in real time by the emulated device.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from homeassistant.components.assist_pipeline import async_get_pipeline, async_update_pipeline
from homeassistant.const import STATE_ON
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
import numpy as np
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.xiaozhi import command_check
from custom_components.xiaozhi.const import DOMAIN, END_OF_SPEECH_KEY, END_OF_SPEECH_SILENCE
from custom_components.xiaozhi.core.messages import ListenMode
from custom_components.xiaozhi.core.timings import EndedBy
from tools.emulator import DeviceEmulator

from .conftest import make_hub_entry
from .core.test_vad import (
    FAINT_NOISE,
    LEAD_S,
    LOUD_NOISE,
    PAUSED_COMMANDS,
    RATE,
    ROOM_NOISE,
    clip,
    voice,
)
from .providers import Providers

type MakeDevice = Callable[..., Coroutine[Any, Any, DeviceEmulator]]
PAUSE_S = 0.3  # the pause inside every command here
TAIL_S = 3.0
NOISES = [FAINT_NOISE, ROOM_NOISE, LOUD_NOISE]  # quiet, ~20 dB SNR, ~10 dB SNR
KITCHEN_LIGHT_ZH = "厨房灯"


@pytest.fixture
def hub_entry(providers: Providers) -> MockConfigEntry:
    """The hub, set up after the providers (their HTTP views must exist before the server)."""
    return make_hub_entry()


async def use_chinese(hass: HomeAssistant, providers: Providers) -> None:
    """A Mandarin Assistant, and the light also called 厨房灯."""
    await async_update_pipeline(
        hass,
        async_get_pipeline(hass),
        conversation_language="zh-cn",
        language="zh-cn",
        stt_language="zh-CN",
        tts_language="zh-CN",
    )
    er.async_get(hass).async_update_entity(providers.light.entity_id, aliases={KITCHEN_LIGHT_ZH})


def command(first: str, second: str, lang: str, noise: float) -> tuple[bytes, float, float]:
    """Speak `first`, pause, speak `second`, in noise; return the audio and where each ends."""
    one, two = voice(first, lang), voice(second, lang)
    audio = clip(LEAD_S, one, PAUSE_S, two, TAIL_S, noise=noise, seed=7)
    first_end = LEAD_S + len(one) / RATE
    return audio.tobytes(), first_end, first_end + PAUSE_S + len(two) / RATE


async def say(
    hass: HomeAssistant,
    providers: Providers,
    make_device: MakeDevice,
    audio: bytes,
    first_end: float,
) -> tuple[DeviceEmulator, dict[str, Any]]:
    """Say `audio` in auto mode; return the device and its `stt` message once replied.

    A check at the 300 ms pause has ~0.1 s to answer before the user talks again. HA's matcher
    rebuilds its lists after the new device's entities were registered and learns each new
    sentence once (in production both happen long before): its first, slow run is done here,
    on the words before the pause, so a busy test machine does not decide the outcome.
    """
    device = await make_device()
    await device.connect()
    await hass.async_block_till_done()
    satellite = er.async_get(hass).async_get_entity_id(
        "assist_satellite", DOMAIN, f"{device.device_id}-assist_satellite"
    )
    registry_entry = er.async_get(hass).async_get(satellite or "")
    assert registry_entry is not None
    await command_check.async_check(
        hass,
        async_get_pipeline(hass),
        audio[: int(first_end * RATE) * 2],
        device_id=registry_entry.device_id,
        satellite_id=satellite,
    )
    providers.stt.heard.clear()
    await device.listen_start(ListenMode.AUTO)
    mic = asyncio.get_running_loop().create_task(device.stream_pcm(audio))
    heard = await device.wait_for("stt")
    await device.wait_for("tts", "stop")
    mic.cancel()
    return device, heard


def ended_by(hass: HomeAssistant, device: DeviceEmulator) -> EndedBy | None:
    hub = hass.config_entries.async_entries(DOMAIN)[0].runtime_data
    ended: EndedBy | None = hub.devices[device.device_id].last_turn.ended_by
    return ended


LANGUAGES = {
    # (incomplete first part, its rest), (a whole command, what follows the pause)
    "en": (("turn on the", "kitchen light"), ("turn on the kitchen light", "thank you")),
    "zh": (("打开", KITCHEN_LIGHT_ZH), (f"打开{KITCHEN_LIGHT_ZH}", "谢谢")),
}
VOICES = {"en": "en-us", "zh": "cmn"}


@pytest.mark.parametrize("noise", NOISES)
@pytest.mark.parametrize("lang", ["en", "zh"])
async def test_a_pause_before_the_command_is_whole_does_not_end_it(
    hass: HomeAssistant, providers: Providers, make_device: MakeDevice, lang: str, noise: float
) -> None:
    """ "turn on the ... kitchen light": the check at the pause hears no command; it goes on."""
    if lang == "zh":
        await use_chinese(hass, providers)
    first, second = LANGUAGES[lang][0]
    audio, first_end, second_end = command(first, second, VOICES[lang], noise)
    whole = f"{first} {second}"
    providers.stt.say(audio, [(first, first_end), (second, second_end)])
    device, heard = await say(hass, providers, make_device, audio, first_end)
    assert heard["text"] == whole
    # A check at the pause heard the first part only, and the turn went on (in loud noise the
    # endpointer may not call the 300 ms a pause at all); the pause after the command ended it.
    assert set(providers.stt.heard) <= {first, whole}
    if noise == FAINT_NOISE:
        assert providers.stt.heard[0] == first
    assert ended_by(hass, device) is EndedBy.COMMAND
    assert len(device.received.of_type("stt")) == 1
    assert len(device.received.of_type("tts", "start")) == 1
    assert hass.states.get(providers.light.entity_id).state == STATE_ON


# At ~10 dB SNR the endpointer may not take 300 ms for a pause at all (the noise keeps the
# voice's tail alive): such a turn ends after the silence, as without the check.
@pytest.mark.parametrize("noise", [FAINT_NOISE, ROOM_NOISE])
@pytest.mark.parametrize("lang", ["en", "zh"])
async def test_a_whole_command_ends_at_the_pause(
    hass: HomeAssistant, providers: Providers, make_device: MakeDevice, lang: str, noise: float
) -> None:
    """ "turn on the kitchen light ... thank you": the turn ends at the pause."""
    if lang == "zh":
        await use_chinese(hass, providers)
    first, second = LANGUAGES[lang][1]
    audio, first_end, second_end = command(first, second, VOICES[lang], noise)
    providers.stt.say(audio, [(first, first_end), (second, second_end)])
    device, heard = await say(hass, providers, make_device, audio, first_end)
    assert heard["text"] == first  # the pipeline's STT never heard the rest
    assert ended_by(hass, device) is EndedBy.COMMAND
    assert providers.stt.received[-1] < second_end * RATE * 2
    assert hass.states.get(providers.light.entity_id).state == STATE_ON


async def test_silence_only_waits_for_the_silence(
    hass: HomeAssistant, providers: Providers, make_device: MakeDevice
) -> None:
    """With "End of speech" at silence only, a pause never ends the turn, nor is checked."""
    first, second = LANGUAGES["en"][1]
    audio, first_end, second_end = command(first, second, VOICES["en"], FAINT_NOISE)
    providers.stt.say(audio, [(first, first_end), (second, second_end)])
    device = await make_device()
    await device.connect()
    select = er.async_get(hass).async_get_entity_id(
        "select", DOMAIN, f"{device.device_id}-{END_OF_SPEECH_KEY}"
    )
    assert select is not None
    await hass.services.async_call(
        "select",
        "select_option",
        {"entity_id": select, "option": END_OF_SPEECH_SILENCE},
        blocking=True,
    )
    await device.listen_start(ListenMode.AUTO)
    mic = asyncio.get_running_loop().create_task(device.stream_pcm(audio))
    heard = await device.wait_for("stt")
    await device.wait_for("tts", "stop")
    mic.cancel()
    assert heard["text"] == f"{first} {second}"
    assert providers.stt.heard == [heard["text"]]  # the pipeline's transcription only
    assert ended_by(hass, device) is EndedBy.SILENCE


async def test_the_check_matches_words_as_the_assistant_would(
    hass: HomeAssistant, providers: Providers
) -> None:
    """Whole commands, in English and Mandarin; a start of one or a question is not one."""
    pipeline = async_get_pipeline(hass)
    silence = np.zeros(RATE // 2, "<i2").tobytes()
    for text, whole in [
        ("turn on the kitchen light", True),
        ("turn on the", False),
        ("what is the meaning of life", False),
    ]:
        providers.stt.transcript = text
        heard = await command_check.async_check(
            hass, pipeline, silence, device_id=None, satellite_id=None
        )
        assert (heard.text, heard.command) == (text, whole)
    await use_chinese(hass, providers)
    pipeline = async_get_pipeline(hass)
    for text, whole in [(f"打开{KITCHEN_LIGHT_ZH}", True), ("打开", False)]:
        providers.stt.transcript = text
        heard = await command_check.async_check(
            hass, pipeline, silence, device_id=None, satellite_id=None
        )
        assert heard.command is whole, text


async def test_no_first_half_of_the_swept_commands_is_a_command(
    hass: HomeAssistant, providers: Providers
) -> None:
    """The words before the pause in the noise sweep's commands make no command: only the
    silence can end those turns, and at the default it cuts none of them (test_vad)."""
    silence = np.zeros(RATE // 2, "<i2").tobytes()
    for chinese in (False, True):
        if chinese:
            await use_chinese(hass, providers)
        pipeline = async_get_pipeline(hass)
        firsts = [first for first, _, lang in PAUSED_COMMANDS if (lang == "cmn") is chinese]
        assert len(firsts) == len(PAUSED_COMMANDS) // 2
        for first in firsts:
            providers.stt.transcript = first
            heard = await command_check.async_check(
                hass, pipeline, silence, device_id=None, satellite_id=None
            )
            assert heard.text == first
            assert not heard.command, first


async def test_an_stt_too_slow_for_the_check_is_not_asked_in_the_next_turns(
    hass: HomeAssistant, providers: Providers, make_device: MakeDevice
) -> None:
    """The silence ended the turn before the check answered: the next turns do without it."""
    first, second = LANGUAGES["en"][1]
    audio, first_end, second_end = command(first, second, VOICES["en"], FAINT_NOISE)
    providers.stt.say(audio, [(first, first_end), (second, second_end)])
    providers.stt.delay = 1.0  # far longer than the silence waits after a pause
    device = await make_device()
    await device.connect()
    for turn in range(2):
        started = providers.stt.started
        after = len(device.received.messages)
        await device.listen_start(ListenMode.AUTO)
        mic = asyncio.get_running_loop().create_task(device.stream_pcm(audio))
        heard = await device.wait_for("stt", after=after)
        await device.wait_for("tts", "stop", after=after)
        mic.cancel()
        assert heard["text"] == f"{first} {second}"  # the silence ended it: whole
        assert ended_by(hass, device) is EndedBy.SILENCE
        # The first turn asked at each pause as well as the pipeline's run; the second only ran.
        assert (providers.stt.started - started > 1) is (turn == 0)
