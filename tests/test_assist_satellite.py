"""Voice turns through a real HA Assist pipeline, driven by the device emulator over loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import replace
import os
from typing import Any

from homeassistant.components import conversation
from homeassistant.components.assist_pipeline import async_get_pipeline, async_update_pipeline
from homeassistant.components.assist_satellite import AssistSatelliteAnnouncement
from homeassistant.const import STATE_OFF, STATE_ON, STATE_UNAVAILABLE
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import device_registry as dr, entity_registry as er, intent
import pytest
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    setup_test_component_platform,
)
from pytest_homeassistant_custom_component.components.diagnostics import (
    get_diagnostics_for_config_entry,
)

from custom_components.xiaozhi.const import DOMAIN
from custom_components.xiaozhi.core import SessionState, vad
from custom_components.xiaozhi.core.const import (
    MAX_PLAYBACK_LEAD_FRAMES,
    PLAYBACK_LEAD_FRAMES,
    TTS_START_SETTLE_S,
)
from custom_components.xiaozhi.core.messages import ListenMode
from custom_components.xiaozhi.core.timings import Stage
from tools.emulator import DeviceEmulator

from . import audio
from .conftest import make_hub_entry
from .core.test_vad import FAINT_NOISE, LEAD_S, clip, voice
from .providers import Providers, async_use_streaming

type MakeDevice = Callable[..., Coroutine[Any, Any, DeviceEmulator]]
SILENCE_FRAME = b"\0" * 1920
FRAME_S = 0.06


@pytest.fixture
def hub_entry(providers: Providers) -> MockConfigEntry:
    """The hub, set up after the providers (their HTTP views must exist before the server)."""
    return make_hub_entry()


@pytest.fixture
async def base_url(hass: HomeAssistant, ota_url: str) -> str:
    """Make HA's own URL the test server's, so announcements can resolve media URLs."""
    base = ota_url.removesuffix("/xiaozhi/ota/")
    await hass.config.async_update(internal_url=base)
    return base


def satellite_entity_id(hass: HomeAssistant, device: DeviceEmulator) -> str:
    entity_id = er.async_get(hass).async_get_entity_id(
        "assist_satellite", DOMAIN, f"{device.device_id}-assist_satellite"
    )
    assert entity_id is not None
    return entity_id


def connectivity_entity_id(hass: HomeAssistant, device: DeviceEmulator) -> str:
    entity_id = er.async_get(hass).async_get_entity_id(
        "binary_sensor", DOMAIN, f"{device.device_id}-connected"
    )
    assert entity_id is not None
    return entity_id


async def wait_for_state(hass: HomeAssistant, entity_id: str, state: str) -> None:
    for _ in range(100):
        if hass.states.get(entity_id).state == state:
            return
        await asyncio.sleep(0.02)
    assert hass.states.get(entity_id).state == state


async def speak(device: DeviceEmulator, speech: bytes, mode: ListenMode) -> asyncio.Task[int]:
    """Start listening, say the command, then keep the microphone open with silence."""
    await device.listen_start(mode)

    async def microphone() -> int:
        sent = await device.stream_pcm(speech)
        if mode is not ListenMode.MANUAL:
            sent += await device.stream_pcm(SILENCE_FRAME * 200)
        return sent

    return asyncio.get_running_loop().create_task(microphone())


def reply_times(device: DeviceEmulator, start: int = 0) -> list[float]:
    return [t for t, _ in device.received.audio[start:]]


def assert_paced(device: DeviceEmulator, start: int = 0) -> None:
    """Reply audio arrives at real time after the pre-buffer."""
    audio.assert_paced(reply_times(device, start), FRAME_S, PLAYBACK_LEAD_FRAMES)


def reply_seconds(device: DeviceEmulator, start: int = 0) -> float:
    return len(device.reply_pcm(start)) / 2 / device.reply_sample_rate


async def test_voice_turn_auto_mode(
    hass: HomeAssistant, providers: Providers, make_device: MakeDevice, speech: bytes
) -> None:
    device = await make_device()
    await device.connect()
    entity_id = satellite_entity_id(hass, device)
    await hass.async_block_till_done()
    assert hass.states.get(entity_id).state != STATE_UNAVAILABLE

    await device.detect("你好小智")
    mic = await speak(device, speech, ListenMode.AUTO)
    stt = await device.wait_for("stt")
    assert stt["text"] == "turn on the kitchen light"
    await device.wait_for("tts", "stop")
    mic.cancel()

    assert hass.states.get(providers.light.entity_id).state == STATE_ON
    kinds = [(m["type"], m.get("state")) for _, m in device.received.messages]
    # The device switched to speaking when the hub decided the speech had ended.
    assert kinds.index(("tts", "start")) < kinds.index(("stt", None))
    assert ("llm", None) in kinds
    sentence = device.received.of_type("tts", "sentence_start")[0]["text"]
    assert sentence == providers.tts.messages[-1]
    assert reply_seconds(device) >= 1.0
    assert_paced(device)
    # The pipeline got the speech, and the hub ended the stream soon after it (VAD).
    assert 1.0 < providers.stt.received[0] / 32000 < len(speech) / 32000 + 1.2

    # The device re-arms after the reply: a follow-up turn starts in the same conversation.
    entry_id = hass.config_entries.async_entries(DOMAIN)[0].entry_id
    registry_device = dr.async_get(hass).async_get_device_by_identifier(
        (DOMAIN, device.device_id), entry_id
    )
    assert registry_device is not None
    assert registry_device.model == "xiaozhi-emulator"
    assert registry_device.sw_version == "2.0.3"
    assert (dr.CONNECTION_NETWORK_MAC, device.device_id) in registry_device.connections

    # Gone idle, as xiaozhi devices do between conversations: still available (it is bound),
    # only its connectivity sensor says it is not connected now.
    connected = connectivity_entity_id(hass, device)
    assert hass.states.get(connected).state == STATE_ON
    await device.close()
    await wait_for_state(hass, connected, STATE_OFF)
    assert hass.states.get(entity_id).state == "idle"


@pytest.fixture
def models_taken(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The voice models taken in HA's process (the worker's are its own)."""
    taken: list[object] = []
    take = vad._take_model

    def recorded() -> object:
        taken.append(model := take())
        return model

    monkeypatch.setattr(vad, "_take_model", recorded)
    return taken


async def test_the_microphone_is_decoded_and_scored_in_the_worker_process(
    hass: HomeAssistant, make_device: MakeDevice, speech: bytes, models_taken: list[object]
) -> None:
    """HA's endpointer ends the turn on scores made in the hub's worker process: no voice model
    runs in HA's process, and the worker imported the core alone, not Home Assistant."""
    device = await make_device()
    await device.connect()
    mic = await speak(device, speech, ListenMode.AUTO)
    assert (await device.wait_for("stt"))["text"] == "turn on the kitchen light"
    await device.wait_for("tts", "stop")
    mic.cancel()
    assert models_taken == []
    hub = hass.config_entries.async_entries(DOMAIN)[0].runtime_data
    assert hub.microphone_worker.pid not in (None, os.getpid())
    imported, _ = await hub.microphones.run(eval, "sorted(__import__('sys').modules)")
    assert "numpy" in imported and "custom_components.xiaozhi.core.vad" in imported
    assert not [name for name in imported if name.startswith(("homeassistant", "aiohttp"))]


async def test_voice_turn_manual_mode(
    hass: HomeAssistant, providers: Providers, make_device: MakeDevice, speech: bytes
) -> None:
    device = await make_device()
    await device.connect()
    mic = await speak(device, speech, ListenMode.MANUAL)
    await mic
    await device.listen_stop()
    assert (await device.wait_for("stt"))["text"] == "turn on the kitchen light"
    await device.wait_for("tts", "stop")
    assert hass.states.get(providers.light.entity_id).state == STATE_ON
    assert reply_seconds(device) >= 1.0
    assert_paced(device)
    # Where the time went, as diagnostics show it: `tts start` went out at `listen stop`; the
    # first frame waited for the device to have switched to speaking, nothing else did.
    kinds = [(m["type"], m.get("state")) for _, m in device.received.messages]
    assert kinds.index(("tts", "start")) < kinds.index(("stt", None))
    hub = hass.config_entries.async_entries(DOMAIN)[0].runtime_data
    stages = hub.devices[device.device_id].last_turn.since_speech_end()
    assert set(stages) == {s.value for s in Stage} - {Stage.SPEECH_END.value}
    assert max(stages, key=stages.__getitem__) == Stage.FIRST_FRAME
    assert stages[Stage.FIRST_FRAME] >= TTS_START_SETTLE_S * 1000 - 1
    await asyncio.sleep(0.2)
    # Manual mode: no follow-up turn; the channel stays open and idle.
    assert not device.closed
    assert device.received.of_type("listen") == []


async def test_voice_turn_realtime_mode(
    hass: HomeAssistant, providers: Providers, make_device: MakeDevice, speech: bytes
) -> None:
    device = await make_device()
    await device.connect()
    mic = await speak(device, speech, ListenMode.REALTIME)  # keeps streaming during the reply
    assert (await device.wait_for("stt"))["text"] == "turn on the kitchen light"
    await device.wait_for("tts", "stop")
    assert not mic.done()
    mic.cancel()
    assert hass.states.get(providers.light.entity_id).state == STATE_ON
    assert reply_seconds(device) >= 1.0
    assert_paced(device)


async def test_barge_in_stops_audio_and_next_turn_works(
    hass: HomeAssistant, providers: Providers, make_device: MakeDevice, speech: bytes
) -> None:
    providers.tts.fail = False
    device = await make_device()
    await device.connect()
    mic = await speak(device, speech, ListenMode.AUTO)
    await device.wait_for("tts", "start")
    for _ in range(200):
        if len(device.received.audio) >= PLAYBACK_LEAD_FRAMES + 2:
            break
        await asyncio.sleep(0.01)
    mic.cancel()
    loop = asyncio.get_running_loop()
    await device.abort()
    aborted_at = loop.time()
    stop = await device.wait_for("tts", "stop")
    assert stop == {"type": "tts", "state": "stop", "session_id": device.session_id}
    await asyncio.sleep(0.3)
    late = [t for t, _ in device.received.audio if t > aborted_at]
    assert len(late) <= 1
    assert reply_seconds(device) < 1.0  # the reply was cut short

    # The next turn works.
    before = len(device.received.messages)
    mic = await speak(device, speech, ListenMode.AUTO)
    await device.wait_for("stt", after=before)
    await device.wait_for("tts", "stop", after=before + 1)
    mic.cancel()
    assert len(device.received.of_type("stt")) == 2


async def test_announce_plays_on_the_device(
    hass: HomeAssistant, providers: Providers, make_device: MakeDevice, base_url: str
) -> None:
    device = await make_device()
    await device.connect()
    entity_id = satellite_entity_id(hass, device)
    await hass.services.async_call(
        "assist_satellite",
        "announce",
        {"message": "Dinner is ready."},
        target={"entity_id": entity_id},
        blocking=True,
    )
    await device.wait_for("tts", "stop", timeout=2)  # sent before the service call returned
    states = [m.get("state") for m in device.received.of_type("tts")]
    assert states[0] == "start"
    assert states[-1] == "stop"
    assert device.received.of_type("tts", "sentence_start")[0]["text"] == "Dinner is ready."
    assert reply_seconds(device) >= 1.0  # preannounce chime + the spoken message
    assert_paced(device)


async def test_announce_to_a_disconnected_device(
    hass: HomeAssistant, providers: Providers, make_device: MakeDevice, base_url: str
) -> None:
    """A device connects only during a conversation: while it is away there is nothing to play to.

    The satellite stays available (HA would skip it silently otherwise) and the call fails with
    the translated error.
    """
    device = await make_device()
    await device.connect()
    entity_id = satellite_entity_id(hass, device)
    await device.close()
    await wait_for_state(hass, connectivity_entity_id(hass, device), STATE_OFF)
    assert hass.states.get(entity_id).state != STATE_UNAVAILABLE
    with pytest.raises(HomeAssistantError) as raised:
        await hass.services.async_call(
            "assist_satellite",
            "announce",
            {"message": "Hello", "preannounce": False},
            target={"entity_id": entity_id},
            blocking=True,
        )
    assert raised.value.translation_key == "not_connected"
    assert "is not connected" in str(raised.value)
    satellite = hass.data["entity_components"]["assist_satellite"].get_entity(entity_id)
    announcement = AssistSatelliteAnnouncement(
        message="Hello",
        media_id="/api/tts_proxy/x",
        original_media_id="x",
        tts_token=None,
        media_id_source="url",
    )
    with pytest.raises(HomeAssistantError) as info:
        await satellite.async_announce(announcement)
    assert info.value.translation_key == "not_connected"


async def test_the_wake_word_cannot_be_changed_from_ha(
    hass: HomeAssistant, make_device: MakeDevice
) -> None:
    """The firmware's wake word is the only one; another fails with the translated error."""
    device = await make_device()
    entity_id = satellite_entity_id(hass, device)
    satellite = hass.data["entity_components"]["assist_satellite"].get_entity(entity_id)
    config = satellite.async_get_configuration()
    assert config.active_wake_words == ["xiaozhi"]
    await satellite.async_set_configuration(config)  # the fixed one is accepted
    with pytest.raises(HomeAssistantError) as refused:
        await satellite.async_set_configuration(replace(config, active_wake_words=["hey_jarvis"]))
    assert refused.value.translation_key == "wake_word_fixed"
    assert str(refused.value) == (
        f"The wake word of {satellite.device.name} is set in its firmware (你好小智) "
        "and cannot be changed in Home Assistant"  # HA drops the final period
    )


class EchoAgent(conversation.ConversationEntity):
    """An agent other than HA's built-in one (which refuses start_conversation)."""

    _attr_name = "Echo"
    _attr_unique_id = "echo-agent"
    _attr_supported_features = conversation.ConversationEntityFeature.CONTROL

    @property
    def supported_languages(self) -> list[str]:
        return ["en"]

    async def _async_handle_message(
        self, user_input: conversation.ConversationInput, chat_log: conversation.ChatLog
    ) -> conversation.ConversationResult:
        response = intent.IntentResponse(language=user_input.language)
        response.async_set_speech(f"You said {user_input.text}.")
        chat_log.async_add_assistant_content_without_tools(
            conversation.AssistantContent(
                agent_id=self.entity_id, content=f"You said {user_input.text}."
            )
        )
        return conversation.ConversationResult(
            response=response, conversation_id=chat_log.conversation_id
        )


async def test_start_conversation_puts_device_back_to_listening(
    hass: HomeAssistant, providers: Providers, make_device: MakeDevice, base_url: str, speech: bytes
) -> None:
    agent = EchoAgent()
    setup_test_component_platform(hass, conversation.DOMAIN, [agent])
    await hass.async_block_till_done()
    await async_update_pipeline(hass, async_get_pipeline(hass), conversation_engine=agent.entity_id)

    device = await make_device(relisten=True)
    await device.connect()
    entity_id = satellite_entity_id(hass, device)
    await hass.services.async_call(
        "assist_satellite",
        "start_conversation",
        {"start_message": "What should I cook?", "preannounce": False},
        target={"entity_id": entity_id},
        blocking=True,
    )
    assert reply_seconds(device) >= 1.0
    assert device.received.of_type("tts", "sentence_start")[0]["text"] == "What should I cook?"
    # Like the firmware, the emulator answers `tts stop` with `listen start`: a new turn opens.
    for _ in range(100):
        if hass.states.get(entity_id).state == "listening":
            break
        await asyncio.sleep(0.02)
    assert hass.states.get(entity_id).state == "listening"
    session = next(iter(hass.config_entries.async_entries(DOMAIN)[0].runtime_data.sessions))
    assert session.state is SessionState.LISTENING

    before = len(device.received.messages)
    mic = asyncio.get_running_loop().create_task(device.stream_pcm(speech + SILENCE_FRAME * 200))
    await device.wait_for("stt", after=before)
    reply = await device.wait_for("tts", "sentence_start", after=before)
    await device.wait_for("tts", "stop", after=before)
    mic.cancel()
    assert reply["text"]
    assert providers.stt.received[-1] > 32000  # the follow-up turn heard the user


async def test_silence_ends_the_conversation(
    hass: HomeAssistant, providers: Providers, make_device: MakeDevice
) -> None:
    """The configurable silence timeout closes a conversation nobody speaks in."""
    entry = hass.config_entries.async_entries(DOMAIN)[0]
    result = await hass.config_entries.options.async_init(entry.entry_id)
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"next_step_id": "conversation"}
    )
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"silence_timeout": 3}
    )
    await hass.async_block_till_done()
    assert entry.options["silence_timeout"] == 3

    device = await make_device()
    await device.connect()
    await device.listen_start(ListenMode.AUTO)
    started = asyncio.get_running_loop().time()
    mic = asyncio.get_running_loop().create_task(device.stream_pcm(SILENCE_FRAME * 200))
    assert await device.wait_closed(timeout=10) == 1000
    elapsed = asyncio.get_running_loop().time() - started
    mic.cancel()
    assert 2.8 < elapsed < 5.0
    assert device.received.of_type("tts", "start") == []


async def test_tts_failure_reaches_the_device(
    hass: HomeAssistant, providers: Providers, make_device: MakeDevice, speech: bytes
) -> None:
    providers.tts.fail = True
    device = await make_device()
    await device.connect()
    mic = await speak(device, speech, ListenMode.AUTO)
    await device.wait_for("stt")
    alert = await device.wait_for("alert")
    assert alert["emotion"] == "sad"
    assert isinstance(alert["message"], str)
    kinds = [(m["type"], m.get("state")) for _, m in device.received.messages]
    # Never stuck speaking: every `tts start` is followed by `tts stop`.
    assert kinds.count(("tts", "start")) == kinds.count(("tts", "stop"))
    await device.wait_closed(timeout=5)
    mic.cancel()


async def test_streaming_reply_starts_before_the_agent_finishes(
    hass: HomeAssistant, providers: Providers, make_device: MakeDevice, speech: bytes
) -> None:
    await async_use_streaming(hass, providers)
    device = await make_device()
    await device.connect()
    mic = await speak(device, speech, ListenMode.AUTO)
    await device.wait_for("tts", "stop")
    mic.cancel()
    first_audio = device.received.audio[0][0]
    assert providers.agent.finished_at is not None
    assert first_audio < providers.agent.finished_at - 0.5  # well before the last token
    sentences = [m["text"] for m in device.received.of_type("tts", "sentence_start")]
    assert sentences == [
        "Sure, here is the plan for tonight.",
        "First, preheat the oven to two hundred degrees.",
        "Then bake the bread for twenty minutes and let it cool.",
    ]
    assert reply_seconds(device) >= 5.0
    audio.assert_never_ahead(reply_times(device), FRAME_S, MAX_PLAYBACK_LEAD_FRAMES)


async def test_follow_up_turns_share_the_conversation(
    hass: HomeAssistant, providers: Providers, make_device: MakeDevice, speech: bytes
) -> None:
    await async_use_streaming(hass, providers)
    device = await make_device(relisten=True)  # the device re-arms after each reply
    await device.connect()
    mic = await speak(device, speech, ListenMode.AUTO)
    await device.wait_for("tts", "stop")
    mic.cancel()
    before = len(device.received.messages)
    mic = asyncio.get_running_loop().create_task(device.stream_pcm(speech + SILENCE_FRAME * 200))
    await device.wait_for("stt", after=before)
    await device.wait_for("tts", "stop", after=before)
    mic.cancel()
    ids = providers.agent.conversation_ids
    assert len(ids) == 2
    assert ids[0] == ids[1]


async def test_stt_failure_ends_the_conversation_cleanly(
    hass: HomeAssistant, providers: Providers, make_device: MakeDevice, speech: bytes
) -> None:
    providers.stt.transcript = ""  # the engine hears nothing it can use
    device = await make_device()
    await device.connect()
    mic = await speak(device, speech, ListenMode.AUTO)
    # The device goes idle instead of streaming its microphone into nothing.
    assert await device.wait_closed(timeout=10) == 1000
    mic.cancel()
    kinds = [(m["type"], m.get("state")) for _, m in device.received.messages if m["type"] != "mcp"]
    # It switched to speaking at the end of speech; the turn's sender ended that before closing.
    assert kinds[1] == ("tts", "start")
    assert kinds[-1] == ("tts", "stop")
    assert kinds.count(("tts", "start")) == 1
    assert device.received.audio == []


async def test_agent_failure_is_spoken(
    hass: HomeAssistant, providers: Providers, make_device: MakeDevice, speech: bytes
) -> None:
    await async_use_streaming(hass, providers)
    providers.agent.fail = True
    device = await make_device()
    await device.connect()
    mic = await speak(device, speech, ListenMode.AUTO)
    await device.wait_for("tts", "stop")
    mic.cancel()
    assert device.received.of_type("llm")[0]["emotion"] == "confused"
    assert device.received.of_type("tts", "sentence_start")  # HA's error message, spoken
    assert reply_seconds(device) > 0.5


async def test_diagnostics_keep_the_last_finished_turn(
    hass: HomeAssistant,
    providers: Providers,
    make_device: MakeDevice,
    speech: bytes,
    hass_client: Any,
) -> None:
    """Auto mode's next `listen start` opens an empty turn; diagnostics show the finished one."""
    device = await make_device(relisten=True)
    await device.connect()
    mic = await speak(device, speech, ListenMode.AUTO)
    await device.wait_for("tts", "stop")
    entry = hass.config_entries.async_entries(DOMAIN)[0]
    xiaozhi = entry.runtime_data.devices[device.device_id]
    finished = xiaozhi.last_turn
    for _ in range(100):  # the device listens again: a new, empty turn
        if xiaozhi._turn is not finished:
            break
        await asyncio.sleep(0.02)
    assert xiaozhi._turn is not finished
    mic.cancel()
    diagnostics = await get_diagnostics_for_config_entry(hass, hass_client, entry)
    stages = diagnostics["devices"][device.device_id]["last_turn_ms_after_speech_end"]
    assert set(stages) >= {Stage.STT_END.value, Stage.FIRST_FRAME.value}
    assert diagnostics["ota_url"].endswith("/xiaozhi/ota/")


async def test_tts_start_goes_out_before_the_stt_result(
    hass: HomeAssistant,
    providers: Providers,
    make_device: MakeDevice,
    speech: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Auto mode: the device switches to speaking while a slow STT engine is still working."""
    transcribe = providers.stt.async_process_audio_stream
    stt_delay = 0.5

    async def slow(*args: Any) -> Any:
        result = await transcribe(*args)
        await asyncio.sleep(stt_delay)
        return result

    monkeypatch.setattr(providers.stt, "async_process_audio_stream", slow)
    device = await make_device()
    await device.connect()
    mic = await speak(device, speech, ListenMode.AUTO)
    stt = await device.wait_for("stt")
    await device.wait_for("tts", "stop")
    mic.cancel()
    assert stt["text"] == "turn on the kitchen light"
    times = {(m["type"], m.get("state")): t for t, m in device.received.messages}
    assert times[("tts", "stop")] > times[("stt", None)]
    assert times[("stt", None)] - times[("tts", "start")] > stt_delay - 0.1
    assert reply_seconds(device) >= 1.0


async def test_streamed_reply_with_a_whole_text_tts_shows_each_sentence_once(
    hass: HomeAssistant, providers: Providers, make_device: MakeDevice, speech: bytes
) -> None:
    """The agent streams, the TTS does not (Wyoming): TTS_START repeats the text; shown once."""
    await async_update_pipeline(
        hass,
        async_get_pipeline(hass),
        conversation_engine=providers.agent.entity_id,
        tts_engine=providers.tts.entity_id,
    )
    providers.agent.word_delay = 0.01
    device = await make_device()
    await device.connect()
    mic = await speak(device, speech, ListenMode.AUTO)
    await device.wait_for("tts", "stop")
    mic.cancel()
    sentences = [m["text"] for m in device.received.of_type("tts", "sentence_start")]
    assert sentences == [
        "Sure, here is the plan for tonight.",
        "First, preheat the oven to two hundred degrees.",
        "Then bake the bread for twenty minutes and let it cool.",
    ]
    assert [m.strip() for m in providers.tts.messages] == [providers.agent.reply]  # one request
    assert reply_seconds(device) >= 5.0


async def test_a_command_with_a_300_ms_pause_is_not_cut(
    hass: HomeAssistant, providers: Providers, make_device: MakeDevice
) -> None:
    """Auto mode at the default setting: the pause is not the end; the whole command is heard."""
    first, second = voice("turn on the"), voice("kitchen light")
    command = clip(LEAD_S, first, 0.3, second, noise=FAINT_NOISE).tobytes()
    first_end = LEAD_S + len(first) / 16000
    providers.stt.say(  # it transcribes the words it heard: at the pause, "turn on the"
        command, [("turn on the", first_end), ("kitchen light", len(command) / 2 / 16000)]
    )
    device = await make_device()
    await device.connect()
    await device.listen_start(ListenMode.AUTO)
    mic = asyncio.get_running_loop().create_task(
        device.stream_pcm(command + clip(3.0, noise=FAINT_NOISE).tobytes())
    )
    await device.wait_for("stt")
    await device.wait_for("tts", "stop")
    mic.cancel()
    assert len(device.received.of_type("stt")) == 1
    assert len(device.received.of_type("tts", "start")) == 1
    assert providers.stt.received[-1] >= len(command)  # the pipeline heard the second part too
    assert (await device.wait_for("stt"))["text"] == "turn on the kitchen light"
