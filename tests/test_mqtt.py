"""The always-connected mode (MQTT+UDP) in a real HA, driven by the emulator over loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
import socket
import struct
from typing import Any

import aiomqtt
from homeassistant.components.media_player import ATTR_MEDIA_VOLUME_LEVEL, SERVICE_VOLUME_SET
from homeassistant.components.notify import ATTR_MESSAGE, ATTR_TITLE
from homeassistant.const import ATTR_ENTITY_ID, STATE_ON, STATE_UNAVAILABLE
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import entity_registry as er, issue_registry as ir
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.xiaozhi.const import (
    DOMAIN,
    ISSUE_DEVICE_AUTH_FAILING,
    ISSUE_MQTT_PORTS_IN_USE,
    MAX_AUTH_FAILURES,
    TRANSPORT_MQTT,
    TRANSPORT_WEBSOCKET,
)
from custom_components.xiaozhi.core import SessionState
from custom_components.xiaozhi.core.const import MQTT_KEEPALIVE_S, PLAYBACK_LEAD_FRAMES
from custom_components.xiaozhi.core.messages import ListenMode
from custom_components.xiaozhi.core.udp import Drop
from custom_components.xiaozhi.devices import XiaozhiDevice
from custom_components.xiaozhi.diagnostics import async_get_config_entry_diagnostics
from custom_components.xiaozhi.hub import XiaozhiHub
from tools.emulator import DeviceEmulator, Transport

from . import audio
from .conftest import make_hub_entry
from .providers import Providers

type MakeDevice = Callable[..., Coroutine[Any, Any, DeviceEmulator]]
SILENCE_FRAME = b"\0" * 1920
FRAME_S = 0.06
WAIT_S = 5.0


@pytest.fixture(autouse=True)
def _loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Listen on loopback only; the ports are the options' (0: any free one)."""
    monkeypatch.setattr("custom_components.xiaozhi.hub.MQTT_LISTEN_HOST", "127.0.0.1")


@pytest.fixture
def hub_entry(providers: Providers) -> MockConfigEntry:
    """The hub, after the providers, on free ports."""
    return make_hub_entry(mqtt_port=0, udp_port=0)


def hub_of(hass: HomeAssistant) -> XiaozhiHub:
    entry = hass.config_entries.async_entries(DOMAIN)[0]
    hub: XiaozhiHub = entry.runtime_data
    return hub


def entity_id(hass: HomeAssistant, platform: str, device: DeviceEmulator, key: str) -> str:
    found = er.async_get(hass).async_get_entity_id(platform, DOMAIN, f"{device.device_id}-{key}")
    assert found is not None
    return found


async def until(condition: Callable[[], bool], timeout: float = WAIT_S) -> None:
    async with asyncio.timeout(timeout):
        for _ in iter(int, 1):  # until it holds (the timeout ends a wait that never does)
            if condition():
                return
            await asyncio.sleep(0.01)


async def switch_to_mqtt(hass: HomeAssistant, device: DeviceEmulator) -> XiaozhiDevice:
    """The user picks "Always connected"; the device restarts (OTA check) and connects."""
    await hass.services.async_call(
        "select",
        "select_option",
        {ATTR_ENTITY_ID: entity_id(hass, "select", device, "transport"), "option": "mqtt"},
        blocking=True,
    )
    await device.check_ota()
    assert device.transport is Transport.MQTT
    await device.connect_mqtt()
    known = hub_of(hass).devices[device.device_id]
    await until(lambda: known.connection is not None)
    return known


async def speak(device: DeviceEmulator, speech: bytes) -> asyncio.Task[int]:
    await device.listen_start(ListenMode.AUTO)

    async def microphone() -> int:
        return await device.stream_pcm(speech) + await device.stream_pcm(SILENCE_FRAME * 200)

    return asyncio.get_running_loop().create_task(microphone())


async def test_voice_turns_over_mqtt_and_udp(
    hass: HomeAssistant, providers: Providers, make_device: MakeDevice, speech: bytes
) -> None:
    device = await make_device()
    assert "mqtt" not in (device.ota_answer or {})  # WebSocket until the user switches
    known = await switch_to_mqtt(hass, device)

    # The OTA answer gives this device its own MQTT credentials (never port 8883).
    block = (device.ota_answer or {})["mqtt"]
    hub = hub_of(hass)
    assert block["endpoint"] == f"127.0.0.1:{hub.mqtt.mqtt_port}"
    assert block["username"] == device.device_id
    assert block["client_id"] == device.client_id
    assert block["password"] == known.mqtt_password and len(block["password"]) >= 32
    assert block["keepalive"] == MQTT_KEEPALIVE_S
    assert all(len(key) <= 15 for key in block)  # the firmware's NVS key limit
    satellite = entity_id(hass, "assist_satellite", device, "assist_satellite")
    await hass.async_block_till_done()
    assert hass.states.get(satellite).state != STATE_UNAVAILABLE  # connected, no conversation

    sessions = []
    for _ in range(2):
        hello = await device.connect()
        assert hello is not None and hello.transport == "udp"
        sessions.append((hello.session_id, device.server_hello))
        start_audio = len(device.received.audio)
        start_messages = len(device.received.messages)
        mic = await speak(device, speech)
        stt = await device.wait_for("stt", after=start_messages)
        assert stt["text"] == "turn on the kitchen light"
        await device.wait_for("tts", "stop", after=start_messages)
        mic.cancel()
        assert hass.states.get(providers.light.entity_id).state == STATE_ON
        # Reply audio came back over UDP, decrypted by the device's own rules, paced.
        assert len(device.reply_pcm(start_audio)) / 2 / device.reply_sample_rate >= 1.0
        times = [t for t, _ in device.received.audio[start_audio:]]
        audio.assert_paced(times, FRAME_S, PLAYBACK_LEAD_FRAMES)
        assert device.udp_dropped == 0

        # The device ends the conversation: the session goes, the MQTT connection stays.
        await device.close_audio_channel()
        await until(lambda: known.session is None)
        assert device.mqtt_connected and known.connection is not None
        assert known.connection.connected
    assert sessions[0][0] != sessions[1][0]  # a session id (and key) per conversation
    assert hub.mqtt.udp.channels == {}


async def test_between_conversations(
    hass: HomeAssistant, providers: Providers, make_device: MakeDevice
) -> None:
    """No session open: a notification is shown; the entities follow the connection."""
    device = await make_device()
    known = await switch_to_mqtt(hass, device)
    assert known.session is None

    notify = entity_id(hass, "notify", device, "alert")
    assert hass.states.get(notify).state != STATE_UNAVAILABLE
    await hass.services.async_call(
        "notify",
        "send_message",
        {ATTR_ENTITY_ID: notify, ATTR_MESSAGE: "Washing machine finished", ATTR_TITLE: "Laundry"},
        blocking=True,
    )
    alert = await device.wait_for("alert")
    assert alert["message"] == "Washing machine finished"
    assert alert["status"] == "Laundry" and alert["emotion"] == "neutral"

    # The device disconnects: the entities follow.
    await device.disconnect_mqtt()
    await until(lambda: known.connection is None)
    await hass.async_block_till_done()
    assert hass.states.get(notify).state == STATE_UNAVAILABLE


def methods(device: DeviceEmulator, start: int = 0) -> list[str]:
    """The MCP methods the emulated device was asked for, from request `start` on."""
    return [str(request["method"]) for request in device.mcp.requests[start:]]


def volume_of(hass: HomeAssistant, speaker: str) -> float | None:
    current = hass.states.get(speaker)
    assert current is not None
    volume: float | None = current.attributes.get(ATTR_MEDIA_VOLUME_LEVEL)
    return volume


async def set_volume(hass: HomeAssistant, speaker: str, level: float) -> None:
    await hass.services.async_call(
        "media_player",
        SERVICE_VOLUME_SET,
        {ATTR_ENTITY_ID: speaker, ATTR_MEDIA_VOLUME_LEVEL: level},
        blocking=True,
    )


async def test_device_tools_between_conversations(
    hass: HomeAssistant, providers: Providers, make_device: MakeDevice, speech: bytes
) -> None:
    """The device's tools over its MQTT connection: listed, called and followed, no session."""
    device = await make_device()
    assert device.mcp.requests == []  # never in a conversation: HA has not seen its tools
    known = await switch_to_mqtt(hass, device)

    # The connection alone lists the tools and reads the status: the entities appear, live.
    await until(lambda: methods(device)[-1:] == ["tools/call"])
    assert methods(device)[:2] == ["initialize", "tools/list"]
    await hass.async_block_till_done()
    speaker = entity_id(hass, "media_player", device, "speaker")
    await until(lambda: volume_of(hass, speaker) == 0.7)
    registry = er.async_get(hass)
    await until(  # the sensors come with the status's keys
        lambda: registry.async_get_entity_id("sensor", DOMAIN, f"{device.device_id}-battery_level")
        is not None
    )
    await hass.async_block_till_done()
    battery = entity_id(hass, "sensor", device, "battery_level")
    assert hass.states.get(battery).state == "76"
    assert known.session is None and device.session_id == ""  # no conversation was opened

    # The volume set from HA: a tools/call over MQTT, the device's volume changes.
    device.mcp.calls.clear()
    device.mcp.battery_level = 75
    await set_volume(hass, speaker, 0.35)
    assert device.mcp.calls[0] == ("self.audio_speaker.set_volume", {"volume": 35})
    assert device.mcp.volume == 35
    assert volume_of(hass, speaker) == 0.35
    call = device.received.of_type("mcp")[-1]
    assert "session_id" not in call  # sent between sessions
    await until(lambda: hass.states.get(battery).state == "75")  # refreshed after the call
    assert known.session is None

    # The MQTT connection drops: the tool entities follow, and a call says why it fails.
    await device.disconnect_mqtt()
    await until(lambda: known.connection is None)
    await hass.async_block_till_done()
    assert hass.states.get(speaker).state == STATE_UNAVAILABLE
    assert hass.states.get(battery).state == STATE_UNAVAILABLE
    await set_volume(hass, speaker, 0.5)  # HA skips an unavailable entity
    with pytest.raises(HomeAssistantError, match="not connected"):  # as the LLM API calls
        await (
            hub_of(hass)
            .device_tools(known)
            .async_call("self.audio_speaker.set_volume", {"volume": 50})
        )
    assert device.mcp.volume == 35

    # It reconnects (its 60 s timer): initialize and tools/list again, the entities come back.
    start = len(device.mcp.requests)
    await device.connect_mqtt()
    await until(lambda: hass.states.get(speaker).state != STATE_UNAVAILABLE)
    assert methods(device, start)[:2] == ["initialize", "tools/list"]
    assert hass.states.get(battery).state == "75"

    # A voice turn over MQTT+UDP still works, and a call during it goes over the session.
    hello = await device.connect()
    assert hello is not None and hello.transport == "udp"
    start_messages = len(device.received.messages)
    mic = await speak(device, speech)
    stt = await device.wait_for("stt", after=start_messages)
    assert stt["text"] == "turn on the kitchen light"
    await set_volume(hass, speaker, 0.5)
    assert device.mcp.volume == 50
    assert device.received.of_type("mcp")[-1]["session_id"] == device.session_id
    await device.wait_for("tts", "stop", after=start_messages)
    mic.cancel()
    assert hass.states.get(providers.light.entity_id).state == STATE_ON

    # The conversation ends; the tools stay available on the connection.
    await device.close_audio_channel()
    await until(lambda: known.session is None)
    await hass.async_block_till_done()
    assert hass.states.get(speaker).state != STATE_UNAVAILABLE
    await set_volume(hass, speaker, 0.2)
    assert device.mcp.volume == 20


async def test_server_goodbye_and_stale_messages(
    hass: HomeAssistant, providers: Providers, make_device: MakeDevice
) -> None:
    device = await make_device()
    known = await switch_to_mqtt(hass, device)
    await device.connect()
    await until(lambda: known.session is not None)
    session = known.session
    assert session is not None

    # The hub ends the session (idle, say): a goodbye with the session id, the device goes idle.
    await session.close()
    goodbye = await device.wait_for("goodbye")
    assert goodbye["session_id"] == device.session_id
    await until(lambda: device.closed)
    assert device.mqtt_connected

    # A device that still believes in a session (HA restarted) is told to end it.
    before = len(device.received.messages)
    await device.send_json({"type": "listen", "state": "start", "mode": "auto"})
    await device.wait_for("goodbye", after=before)

    # A new hello opens a new session on the same connection.
    assert await device.connect() is not None
    await until(lambda: known.session is not None and known.session is not session)


async def test_wrong_credentials_refused(
    hass: HomeAssistant, providers: Providers, make_device: MakeDevice
) -> None:
    device = await make_device()
    await switch_to_mqtt(hass, device)
    hub = hub_of(hass)
    port = hub.mqtt.mqtt_port
    settings = device.mqtt_settings
    wrong = [
        {"username": settings["username"], "password": "guess"},
        {"username": "02:00:00:00:00:01", "password": settings["password"]},
        {"username": "not a mac", "password": settings["password"]},
        {"username": settings["username"], "password": settings["password"], "identifier": "x"},
    ]
    for credentials in wrong:
        credentials.setdefault("identifier", str(settings["client_id"]))
        client = aiomqtt.Client("127.0.0.1", port, timeout=WAIT_S, **credentials)
        with pytest.raises(aiomqtt.MqttError):
            async with client:
                pass
    assert hub.mqtt.refused == len(wrong)
    assert device.mqtt_connected  # the real device kept its connection

    for _ in range(MAX_AUTH_FAILURES):  # a bound pair with an old password gets a repair
        client = aiomqtt.Client(
            "127.0.0.1",
            port,
            identifier=str(settings["client_id"]),
            username=str(settings["username"]),
            password="old",
            timeout=WAIT_S,
        )
        with pytest.raises(aiomqtt.MqttError):
            async with client:
                pass
    issue = f"{ISSUE_DEVICE_AUTH_FAILING}_{device.device_id.replace(':', '')}"
    assert ir.async_get(hass).async_get_issue(DOMAIN, issue) is not None


async def test_bad_datagrams_dropped_and_counted(
    hass: HomeAssistant, providers: Providers, make_device: MakeDevice
) -> None:
    device = await make_device()
    known = await switch_to_mqtt(hass, device)
    await device.connect()
    await device.listen_start(ListenMode.MANUAL)
    hub = hub_of(hass)
    drops = hub.mqtt.udp.drops
    good = [device.seal(b"\xf8\xff\xfe") for _ in range(4)]  # Opus silence, sequences 1-4
    await device.send_binary(good[1])
    await until(lambda: bool(known.session and known.session.link.channel.packets_received))

    await device.send_binary(good[1])  # replayed
    await device.send_binary(good[0])  # older, never seen: out of order
    truncated = good[2][:-1]
    padded = good[2] + b"\0"
    wrong_length = good[2][:2] + struct.pack(">H", 99) + good[2][4:]
    for datagram in (truncated, padded, wrong_length):
        await device.send_binary(datagram)
    await device.send_binary(b"\x01\x00")  # short
    await device.send_binary(b"\x02" + good[2][1:])  # not audio
    unknown = bytearray(good[2])
    unknown[4:8] = b"\0\0\0\0"
    await device.send_binary(bytes(unknown))  # no session has this ssrc
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
        other.bind(("127.0.0.2", 0))  # another host on loopback
        other.sendto(good[3], ("127.0.0.1", hub.mqtt.udp_port))
    await until(lambda: drops[Drop.WRONG_SENDER] == 1)

    assert drops[Drop.REPLAYED] == 1
    assert drops[Drop.OUT_OF_ORDER] == 1
    assert drops[Drop.LENGTH_MISMATCH] == 3
    assert drops[Drop.SHORT] == 1
    assert drops[Drop.NOT_AUDIO] == 1
    assert drops[Drop.UNKNOWN_CHANNEL] == 1
    session = known.session
    assert session is not None and session.state is SessionState.LISTENING
    assert session.link.channel.packets_received == 1  # only the good one reached the session

    # The diagnostics show the counters; no secret leaks into them.
    entry = hass.config_entries.async_entries(DOMAIN)[0]
    data = await async_get_config_entry_diagnostics(hass, entry)
    assert data["always_connected"]["udp"]["dropped"]["replayed"] == 1
    text = str(data)
    assert str(device.mqtt_settings["password"]) not in text
    assert session.link.channel.key.hex() not in text


async def test_unload_closes_everything_and_switch_back(
    hass: HomeAssistant, providers: Providers, make_device: MakeDevice
) -> None:
    device = await make_device()
    known = await switch_to_mqtt(hass, device)
    await device.connect()
    hub = hub_of(hass)
    entry = hass.config_entries.async_entries(DOMAIN)[0]
    assert await hass.config_entries.async_unload(entry.entry_id)
    await until(lambda: not device.mqtt_connected)
    assert not hub.mqtt.running and hub.mqtt.connections == {}

    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    hub = hub_of(hass)
    assert hub.mqtt.running  # a switched device reopens the listeners at set-up
    await device.check_ota()
    await device.connect_mqtt()
    known = hub.devices[device.device_id]
    await until(lambda: known.connection is not None)

    # Back to the WebSocket: the connected device is restarted and its next answer has no mqtt.
    await hass.services.async_call(
        "select",
        "select_option",
        {
            ATTR_ENTITY_ID: entity_id(hass, "select", device, "transport"),
            "option": TRANSPORT_WEBSOCKET,
        },
        blocking=True,
    )
    reboot = await device.wait_for("system")
    assert reboot["command"] == "reboot"
    await device.check_ota()
    assert device.transport is Transport.WEBSOCKET
    assert known.transport == TRANSPORT_WEBSOCKET


async def test_ports_in_use_raise_a_repair(
    hass: HomeAssistant, providers: Providers, make_device: MakeDevice
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        entry = hass.config_entries.async_entries(DOMAIN)[0]
        hass.config_entries.async_update_entry(entry, options={**entry.options, "mqtt_port": port})
        await hass.async_block_till_done()
        device = await make_device()
        await hass.services.async_call(
            "select",
            "select_option",
            {ATTR_ENTITY_ID: entity_id(hass, "select", device, "transport"), "option": "mqtt"},
            blocking=True,
        )
        assert ir.async_get(hass).async_get_issue(DOMAIN, ISSUE_MQTT_PORTS_IN_USE) is not None
        # The device is still served: its answer sends it to the WebSocket.
        await device.check_ota()
        assert device.transport is Transport.WEBSOCKET
        assert hub_of(hass).devices[device.device_id].transport == TRANSPORT_MQTT
    # Ports free again: the next switch opens them and the repair goes.
    hass.config_entries.async_update_entry(entry, options={**entry.options, "mqtt_port": 0})
    await hass.async_block_till_done()
    assert await hub_of(hass).async_start_mqtt()
    assert ir.async_get(hass).async_get_issue(DOMAIN, ISSUE_MQTT_PORTS_IN_USE) is None
