"""The add-on as users run it: its own process beside a real `hass` process, and HA restarting.

Both are started as the README and addon/DOCS.md say (`python -m xiaozhi_addon`, `hass`); HA is
set up through its REST and WebSocket APIs like the UI does, the hub linked to the add-on by URL
(the Docker user's path; the Supervisor's discovery step is tested in test_addon_config_flow.py).
The emulated device only ever talks to the add-on's ports.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
import importlib.util
import os
from pathlib import Path
import subprocess
from types import ModuleType
from typing import Any

import aiohttp
import pytest

from custom_components.xiaozhi.core.messages import ListenMode
from tools.audio import speech_pcm
from tools.emulator import DeviceEmulator

from .addon import addon_command

REPO = Path(__file__).resolve().parent.parent
SECRET = "process-test-secret"
SILENCE_FRAME = b"\0" * 1920
LINK_TIMEOUT_S = 60.0


def load_demo() -> ModuleType:
    """The demo's helpers (start hass, onboard, add integrations, enter a device's code)."""
    spec = importlib.util.spec_from_file_location("xiaozhi_demo", REPO / "scripts" / "demo.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


demo = load_demo()


def start_addon(
    work: Path, http_port: int, websocket_port: int, log: Any
) -> subprocess.Popen[bytes]:
    """Start the add-on's entry point, as its image's run script does, on loopback ports."""
    env = os.environ | {"PYTHONPATH": str(REPO / "addon")}
    env.pop("SUPERVISOR_TOKEN", None)
    return subprocess.Popen(
        addon_command("xiaozhi_addon", work, SECRET, http_port, websocket_port, "debug"),
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


async def addon_status(http: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    async with http.get(
        f"{base}/xiaozhi/link/status", headers={"Authorization": f"Bearer {SECRET}"}
    ) as response:
        response.raise_for_status()
        status: dict[str, Any] = await response.json()
        return status


async def wait_linked(http: aiohttp.ClientSession, base: str, linked: bool) -> None:
    async with asyncio.timeout(LINK_TIMEOUT_S):
        while (await addon_status(http, base))["linked"] is not linked:  # noqa: ASYNC110 - polled over HTTP
            await asyncio.sleep(0.2)


async def say(device: DeviceEmulator, speech: bytes) -> dict[str, Any]:
    """One auto-mode turn; returns the `stt` the device was shown."""
    after = len(device.received.messages)
    await device.listen_start(ListenMode.AUTO)
    mic = asyncio.get_running_loop().create_task(device.stream_pcm(speech + SILENCE_FRAME * 300))
    try:
        stt = await device.wait_for("stt", after=after, timeout=30)
        await device.wait_for("tts", "stop", after=after, timeout=30)
    finally:
        mic.cancel()
    return stt


@pytest.fixture
async def http(socket_enabled: None) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_addon_process_serves_a_turn_and_survives_an_ha_restart(
    http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    config_dir = tmp_path / "config"
    port, stt_port, tts_port = demo.free_port(), demo.free_port(), demo.free_port()
    addon_http, addon_ws = demo.free_port(), demo.free_port()
    base, addon = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{addon_http}"
    demo.write_config(config_dir, port)
    log = (tmp_path / "processes.log").open("wb")
    children = [
        demo.start_provider("wyoming_stt", stt_port, log),
        demo.start_provider("wyoming_tts", tts_port, log),
        start_addon(tmp_path, addon_http, addon_ws, log),
    ]
    device: DeviceEmulator | None = None
    try:
        hass = demo.start_hass(config_dir, log)
        children.append(hass)
        await demo.wait_for_port(stt_port)
        await demo.wait_for_port(tts_port)
        await demo.wait_for_port(addon_http)
        await demo.wait_for_hass(http, base, hass)
        token = await demo.onboard(http, base)
        for provider_port in (stt_port, tts_port):
            await demo.add_integration(
                http, base, token, "wyoming", {"host": "127.0.0.1", "port": provider_port}
            )
        ws = await demo.HassWebSocket.connect(http, base, token)
        try:
            await demo.add_wyoming_pipeline(ws)
        finally:
            await ws.close()
        result = await demo.add_integration(
            http, base, token, "xiaozhi", {"addon_url": addon, "link_secret": SECRET}
        )
        # The URL the user is shown is the add-on's port, the reference server's path.
        assert result["description_placeholders"]["ota_url"] == f"{addon}/xiaozhi/ota/"
        await wait_linked(http, addon, True)

        # A new device, pointed at the add-on, added with its code in HA's UI.
        # Idle between turns (no re-listen): a listening device nobody talks to is closed.
        device = DeviceEmulator(f"{addon}/xiaozhi/ota/", relisten=False)
        await device.check_ota()
        assert device.activation_code is not None
        await demo.enter_code(http, base, token, device.device_id, device.activation_code)
        await device.activate(poll_s=0.2)
        answer = await device.check_ota()
        assert answer["websocket"]["url"] == f"ws://127.0.0.1:{addon_ws}/xiaozhi/v1/"
        assert await device.connect() is not None
        speech = speech_pcm(demo.COMMAND)
        stt = await say(device, speech)
        assert "kitchen light" in stt["text"]
        assert await demo.light_state(http, base, token) == "on"
        assert device.received.audio, "the reply's audio reached the device"
        session_id = device.session_id

        # HA stops (a restart): the device stays connected to the add-on ...
        demo.stop([hass])
        await wait_linked(http, addon, False)
        assert (await addon_status(http, addon))["channels"] == 1
        after = len(device.received.messages)
        await device.listen_start(ListenMode.AUTO)
        await device.wait_for("tts", "stop", after=after, timeout=10)
        assert "restarting" in device.received.of_type("alert")[-1]["message"]
        assert not device.closed

        # ... HA is back, links again, and the next turn works on the same channel.
        hass = demo.start_hass(config_dir, log)
        children.append(hass)
        await demo.wait_for_hass(http, base, hass)
        await wait_linked(http, addon, True)
        await asyncio.sleep(1.0)  # the satellite takes the handed-over channel
        async with http.post(
            f"{base}/api/services/light/turn_off",
            json={"entity_id": demo.LIGHT},
            headers={"Authorization": f"Bearer {token}"},
        ) as response:
            response.raise_for_status()
        assert await demo.light_state(http, base, token) == "off"
        stt = await say(device, speech)
        assert "kitchen light" in stt["text"]
        assert await demo.light_state(http, base, token) == "on"
        assert not device.closed
        assert device.session_id == session_id
    finally:
        if device is not None:
            await device.close()
        demo.stop(children)
        log.close()
