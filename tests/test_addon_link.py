"""The add-on host serves the devices; a real HA, linked to it, answers them.

The add-on (`addon/xiaozhi_addon`, the core imported as `xiaozhi_core`) runs in the test's
loop on its own loopback ports; HA's hub links to it over the real link. Devices use the add-on's
OTA URL only, never HA's port.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
import ctypes.util
import importlib
import os
from typing import Any

import aiohttp
from homeassistant.config_entries import ConfigEntryState
from homeassistant.const import STATE_ON
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers.network import get_url
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
from yarl import URL

from custom_components.xiaozhi.const import CONF_ADDON_URL, CONF_LINK_SECRET, DOMAIN
from custom_components.xiaozhi.core import vad
from custom_components.xiaozhi.core.link import LINK_VERSION
from custom_components.xiaozhi.core.messages import ListenMode
from tools.emulator import DeviceEmulator

from .addon import SECRET, SILENCE_FRAME, AddonHost, addon_url, wait_until
from .conftest import async_enter_code
from .providers import Providers
from .test_third_party_client import SdkUser, activate_and_speak


@pytest.fixture
async def hub(
    hass: HomeAssistant, providers: Providers, addon: AddonHost
) -> AsyncIterator[MockConfigEntry]:
    """The hub, linked to the add-on."""
    entry = MockConfigEntry(
        domain=DOMAIN,
        title="Xiaozhi",
        data={CONF_ADDON_URL: addon_url(addon), CONF_LINK_SECRET: SECRET},
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    await wait_until(lambda: addon.gate.linked)
    yield entry
    if entry.state is ConfigEntryState.LOADED:
        assert await hass.config_entries.async_unload(entry.entry_id)


async def add_device(
    hass: HomeAssistant, addon: AddonHost, *, connect: bool = True, **kwargs: Any
) -> DeviceEmulator:
    """A new device pointed at the add-on, added with the code it speaks, connected."""
    device = DeviceEmulator(f"{addon_url(addon)}/xiaozhi/ota/", relisten=False, **kwargs)
    await device.check_ota()
    code = device.activation_code
    assert code is not None
    await async_enter_code(hass, device.device_id, code)
    await device.activate(poll_s=0.01)
    answer = await device.check_ota()
    assert answer["websocket"]["url"] == f"ws://127.0.0.1:{addon.websocket_port}/xiaozhi/v1/"
    if connect:
        assert await device.connect() is not None
    return device


async def say(device: DeviceEmulator, speech: bytes) -> None:
    """One auto-mode turn: listen, speak, keep the microphone open until the reply ends."""
    after = len(device.received.messages)
    await device.listen_start(ListenMode.AUTO)
    mic = asyncio.get_running_loop().create_task(device.stream_pcm(speech + SILENCE_FRAME * 200))
    try:
        await device.wait_for("tts", "stop", after=after)
    finally:
        mic.cancel()


def satellite(hass: HomeAssistant, device: DeviceEmulator) -> str:
    entity_id = er.async_get(hass).async_get_entity_id(
        "assist_satellite", DOMAIN, f"{device.device_id}-assist_satellite"
    )
    assert entity_id is not None
    return entity_id


@pytest.fixture
def models_taken(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Which side took a voice model in this process, in order: HA's endpointers or the add-on's
    scorers (the add-on's worker process takes its own, unseen here)."""
    sides: list[str] = []
    for side, module in (("HA", vad), ("add-on", importlib.import_module("xiaozhi_core.vad"))):

        def recorded(side: str = side, take: Any = module._take_model) -> Any:
            sides.append(side)
            return take()

        monkeypatch.setattr(module, "_take_model", recorded)
    return sides


async def test_a_device_on_the_addon_turns_on_a_light(
    hass: HomeAssistant,
    hub: MockConfigEntry,
    addon: AddonHost,
    providers: Providers,
    speech: bytes,
    models_taken: list[str],
) -> None:
    device = await add_device(hass, addon)
    try:
        await wait_until(lambda: hub.runtime_data.devices[device.device_id].session is not None)
        assert hass.states.get(satellite(hass, device)).state == "idle"
        await say(device, speech)
        assert device.received.of_type("stt")[-1]["text"] == "turn on the kitchen light"
        # HA's endpointer ended the turn on the add-on's scores, made in its worker process: no
        # model was taken by HA, nor beside the add-on's event loop.
        assert models_taken == []
        assert addon.microphone_worker.pid not in (None, os.getpid())
        assert hub.runtime_data.microphone_worker.pid is None  # HA serves no channel itself
        assert hass.states.get(providers.light.entity_id).state == STATE_ON
        # The reply came through the add-on, its subtitle once, in step with its audio.
        sentences = device.received.of_type("tts", "sentence_start")
        assert [s["text"] for s in sentences] == [providers.tts.messages[-1]]
        assert len(device.received.audio) > 10
        timings = hub.runtime_data.devices[device.device_id].last_turn.since_speech_end()
        assert {"tts_start", "first_frame"} <= timings.keys()
        # The camera's photos go to HA's own port on the host the device reached (the add-on's
        # ports are mapped on HA's host): the add-on takes no photos.
        await wait_until(lambda: device.mcp.vision_url is not None)
        ha_port = URL(get_url(hass, allow_external=False)).port
        assert device.mcp.vision_url == f"http://127.0.0.1:{ha_port}/xiaozhi/vision"
    finally:
        await device.close()


async def test_ha_restarting_keeps_the_device_connected(
    hass: HomeAssistant, hub: MockConfigEntry, addon: AddonHost, providers: Providers, speech: bytes
) -> None:
    device = await add_device(hass, addon)
    try:
        await wait_until(lambda: hub.runtime_data.devices[device.device_id].session is not None)
        session_id, channels = device.session_id, set(addon.gate.channels)
        # HA gave the add-on the restart notice in the device's Assistant's voice beforehand.
        await wait_until(lambda: device.device_id in addon.gate.notices)
        # HA goes away (the hub unloads, as at a restart): the device's channel stays open.
        assert await hass.config_entries.async_unload(hub.entry_id)
        await wait_until(lambda: not addon.gate.linked)
        assert len(addon.gate.channels) == 1

        # A turn now is told HA is restarting, shown, spoken and ended (the device goes back).
        after, heard = len(device.received.messages), len(device.received.audio)
        await device.listen_start(ListenMode.AUTO)
        stop = await device.wait_for("tts", "stop", after=after)
        _, pcm = addon.gate.notices[device.device_id]
        notice_s = len(pcm) / 2 / device.reply_sample_rate
        assert notice_s > 0.5
        assert len(device.received.audio) - heard >= int(notice_s / 0.06) - 1
        alert = device.received.of_type("alert")[-1]
        assert "restarting" in alert["message"]
        assert "restarting" in device.received.of_type("tts", "sentence_start")[-1]["text"]
        assert stop["session_id"] == device.session_id
        assert not device.closed

        # HA is back: the kept channel is handed to it; the next turn works, no reconnect.
        assert await hass.config_entries.async_setup(hub.entry_id)
        await hass.async_block_till_done()
        await wait_until(lambda: hub.runtime_data.devices[device.device_id].session is not None)
        assert hub.runtime_data.link.links == 1
        await say(device, speech)
        assert device.received.of_type("stt")[-1]["text"] == "turn on the kitchen light"
        assert hass.states.get(providers.light.entity_id).state == STATE_ON
        # The same channel all along: the session the device's hello opened, no reconnect.
        assert not device.closed
        assert device.session_id == session_id
        assert set(addon.gate.channels) == channels
    finally:
        await device.close()


async def test_a_device_ha_removed_while_away_is_closed_when_it_returns(
    hass: HomeAssistant, hub: MockConfigEntry, addon: AddonHost
) -> None:
    device = await add_device(hass, addon)
    try:
        hub_runtime = hub.runtime_data
        await wait_until(lambda: hub_runtime.devices[device.device_id].session is not None)
        assert await hass.config_entries.async_unload(hub.entry_id)
        await wait_until(lambda: not addon.gate.linked)
        # Revoked while HA "was away" (here: in its store, before it links again).
        await hub_runtime.store.async_forget(device.device_id)
        assert await hass.config_entries.async_setup(hub.entry_id)
        await hass.async_block_till_done()
        assert await device.wait_closed() is not None
        await wait_until(lambda: not addon.gate.channels)
    finally:
        await device.close()


async def test_the_link_refuses_a_wrong_secret(addon: AddonHost) -> None:
    async with aiohttp.ClientSession() as http:
        for path in ("/xiaozhi/link", "/xiaozhi/link/status"):
            async with http.get(
                f"{addon_url(addon)}{path}", headers={"Authorization": "Bearer guess"}
            ) as response:
                assert response.status == 401
        async with http.get(
            f"{addon_url(addon)}/xiaozhi/link/status", headers={"Authorization": f"Bearer {SECRET}"}
        ) as response:
            assert response.status == 200
            assert (await response.json())["version"] == LINK_VERSION
    assert not addon.gate.linked


async def test_while_ha_was_never_linked_devices_are_told_to_wait(addon: AddonHost) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{addon_url(addon)}/xiaozhi/ota/",
            headers={"Device-Id": "aa:bb:cc:dd:ee:01", "Client-Id": "c1"},
            json={},
        ) as response,
    ):
        assert response.status == 503


async def test_an_always_connected_device_is_relayed_and_kept(
    hass: HomeAssistant, hub: MockConfigEntry, addon: AddonHost, providers: Providers, speech: bytes
) -> None:
    device = await add_device(hass, addon, connect=False)
    try:
        known = hub.runtime_data.devices[device.device_id]
        await hass.services.async_call(
            "select",
            "select_option",
            {"entity_id": entity(hass, "select", device, "transport"), "option": "mqtt"},
            blocking=True,
        )
        answer = await device.check_ota()
        # The add-on's MQTT port, on the host the device reached; HA opened no listener.
        assert answer["mqtt"]["endpoint"] == f"127.0.0.1:{addon.mqtt_port}"
        assert not hub.runtime_data.mqtt.running
        await device.connect_mqtt()
        await wait_until(lambda: known.connection is not None and known.connection.connected)

        hello = await device.connect()
        assert hello is not None
        assert hello.transport == "udp"
        await say(device, speech)
        assert device.received.of_type("stt")[-1]["text"] == "turn on the kitchen light"
        assert hass.states.get(providers.light.entity_id).state == STATE_ON
        await device.close_audio_channel()
        await wait_until(lambda: known.session is None)

        # HA restarts: the MQTT connection stays up on the add-on, and is handed back.
        assert await hass.config_entries.async_unload(hub.entry_id)
        await wait_until(lambda: not addon.gate.linked)
        assert device.mqtt_connected
        assert len(addon.gate.connections) == 1
        assert await hass.config_entries.async_setup(hub.entry_id)
        await hass.async_block_till_done()
        known = hub.runtime_data.devices[device.device_id]
        await wait_until(lambda: known.connection is not None and known.connection.connected)
        # Between conversations HA reaches the device over the kept connection (its MCP tool):
        # the tools are listed again over it, and the restart button comes back with them.
        reboot = entity(hass, "button", device, "reboot")
        await wait_until(
            lambda: (state := hass.states.get(reboot)) is not None and state.state != "unavailable"
        )
        await hass.services.async_call(
            "button",
            "press",
            {"entity_id": reboot},
            blocking=True,
        )
        await wait_until(lambda: any(name == "self.reboot" for name, _ in device.mcp.calls))
    finally:
        await device.close()


def entity(hass: HomeAssistant, platform: str, device: DeviceEmulator, key: str) -> str:
    entity_id = er.async_get(hass).async_get_entity_id(
        platform, DOMAIN, f"{device.device_id}-{key}"
    )
    assert entity_id is not None
    return entity_id


async def test_while_ha_is_away_a_device_gets_its_own_answer_only(
    hass: HomeAssistant, hub: MockConfigEntry, addon: AddonHost
) -> None:
    device = await add_device(hass, addon, connect=False)
    try:
        token = device.ota_answer["websocket"]["token"]
        # A check from a made-up MAC gets a code; the add-on keeps nothing of it.
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{addon_url(addon)}/xiaozhi/ota/",
                headers={
                    "Device-Id": "02:00:00:00:00:99",
                    "Client-Id": "made-up",
                    "Accept-Language": "zh-CN",
                },
                json={},
            ) as response,
        ):
            assert "activation" in await response.json()
        assert "02:00:00:00:00:99" not in addon.gate.languages
        assert all(mac == device.device_id for mac, _ in addon.gate._answers)
        assert await hass.config_entries.async_unload(hub.entry_id)
        await wait_until(lambda: not addon.gate.linked)
        # The device itself (its MAC and Client-Id) gets HA's last answer, token and all.
        answer = await device.check_ota()
        assert answer["websocket"]["token"] == token
        # Its MAC with another Client-Id is not that device: no token while HA is away.
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{addon_url(addon)}/xiaozhi/ota/",
                headers={"Device-Id": device.device_id, "Client-Id": "someone-else"},
                json={},
            ) as response,
        ):
            assert response.status == 503
            assert token not in await response.text()
    finally:
        await device.close()


async def test_a_third_party_client_through_the_addon(
    hass: HomeAssistant,
    hub: MockConfigEntry,
    addon: AddonHost,
    providers: Providers,
    speech: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """xiaozhi-sdk from PyPI, unmodified, on the add-on's ports: it connects before it is
    activated, polls /activate itself, reconnects, then talks in realtime mode."""
    monkeypatch.setattr(ctypes.util, "find_library", ctypes.util.find_library)  # undone after
    user = SdkUser(f"{addon_url(addon)}/xiaozhi/ota/")
    client = user.client
    try:
        _, heard = await activate_and_speak(hass, user, speech)
        assert user.messages[heard]["text"] == "turn on the kitchen light"
        assert hass.states.get(providers.light.entity_id).state == STATE_ON
        assert client.output_audio_queue, "no reply audio the client could decode"
    finally:
        await client.close()


async def test_push_to_talk_with_20_ms_frames_through_the_addon(
    hass: HomeAssistant, hub: MockConfigEntry, addon: AddonHost, providers: Providers, speech: bytes
) -> None:
    """Manual mode (only `listen stop` ends the turn) and another frame length, relayed."""
    device = await add_device(hass, addon, frame_duration=20)
    try:
        await wait_until(lambda: hub.runtime_data.devices[device.device_id].session is not None)
        await device.listen_start(ListenMode.MANUAL)
        await device.stream_pcm(speech + SILENCE_FRAME * 40)  # 2.4 s of silence: not the end
        assert not device.received.of_type("stt")
        await device.listen_stop()
        assert (await device.wait_for("stt"))["text"] == "turn on the kitchen light"
        await device.wait_for("tts", "stop")
        assert hass.states.get(providers.light.entity_id).state == STATE_ON
        assert device.received.audio
    finally:
        await device.close()
