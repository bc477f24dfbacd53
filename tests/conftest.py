"""Shared fixtures: a real Home Assistant with the integration, and speech-like test audio."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any
from unittest.mock import patch

from homeassistant.components.repairs import repairs_flow_manager
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.setup import async_setup_component
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry, mock_config_flow

from custom_components.xiaozhi.activation import waiting_issue_id
from custom_components.xiaozhi.const import DOMAIN
from custom_components.xiaozhi.core import OTA_PATH
from tools.audio import speech_pcm
from tools.emulator import DeviceEmulator

from .addon import addon_fixture  # noqa: F401 - the add-on host fixture
from .cloud_servers import BlackHole, DashScopeServer, EdgeServer, mp3_clip
from .providers import TEST_DOMAIN, Providers, ProvidersFlow, async_setup_providers

TEST_TOKEN = "test-hub-token"


@pytest.fixture(autouse=True)
def _custom_integrations(request: pytest.FixtureRequest) -> None:
    """Let HA load custom_components/ in every test that has a `hass`."""
    if "hass" in request.fixturenames:
        request.getfixturevalue("enable_custom_integrations")


@pytest.fixture(autouse=True)
def _tts_cache_in_tmp(tmp_path: Path) -> Iterator[None]:
    """Keep HA's TTS file cache per test (it defaults to the shared test config dir)."""
    with (
        patch("homeassistant.components.tts._init_tts_cache_dir", return_value=str(tmp_path)),
        patch("homeassistant.components.tts._get_cache_files", return_value={}),
    ):
        yield


@pytest.fixture
async def ha_core(hass: HomeAssistant) -> None:
    """Set up what a real HA always has before any integration (exposed entities and such)."""
    for component in ("homeassistant", "websocket_api", "config", "repairs"):
        assert await async_setup_component(hass, component, {})


def make_hub_entry(**options: Any) -> MockConfigEntry:
    """Return a hub config entry (not yet added) with these options."""
    return MockConfigEntry(domain=DOMAIN, title="Xiaozhi", data={}, options=options)


def allow_a_fleet(monkeypatch: pytest.MonkeyPatch, devices: int = 1000) -> None:
    """Lift the limits a fleet of emulated devices on one address runs into (benchmarks).

    Always-connected listeners, if a fleet uses them, listen on loopback.
    """
    monkeypatch.setattr("custom_components.xiaozhi.hub.MAX_DEVICES_WITHOUT_CODE", devices)
    monkeypatch.setattr("custom_components.xiaozhi.core.server.MAX_CHANNELS_PER_ADDRESS", devices)
    monkeypatch.setattr(
        "custom_components.xiaozhi.core.mqtt_server.MAX_CHANNELS_PER_ADDRESS", devices
    )
    monkeypatch.setattr("custom_components.xiaozhi.hub.MQTT_LISTEN_HOST", "127.0.0.1")


@pytest.fixture
def hub_entry() -> MockConfigEntry:
    """The hub's config entry; modules that need providers first override this fixture."""
    return make_hub_entry()


@pytest.fixture
async def providers(hass: HomeAssistant, ha_core: None) -> AsyncIterator[Providers]:
    """Test STT/TTS/agent entities, a light, and a pipeline that uses them."""
    with mock_config_flow(TEST_DOMAIN, ProvidersFlow):
        yield await async_setup_providers(hass)


@pytest.fixture
async def ota_url(
    hass: HomeAssistant,
    ha_core: None,
    hub_entry: MockConfigEntry,
    hass_client_no_auth: Any,
    socket_enabled: None,
) -> AsyncIterator[str]:
    """Set the hub up, serve HA's HTTP app on loopback, and return the device's OTA URL."""
    hub_entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(hub_entry.entry_id)
    await hass.async_block_till_done()
    client = await hass_client_no_auth()  # starts the server: views must be registered first
    yield str(client.make_url(OTA_PATH))
    # Unloading waits for every device handler to end (no lingering sockets or timers).
    if hub_entry.state is ConfigEntryState.LOADED:
        assert await hass.config_entries.async_unload(hub_entry.entry_id)


async def async_start_fix(hass: HomeAssistant, issue_id: str) -> dict[str, Any]:
    """Do what the user does in Settings -> Repairs: open a repair's fix flow."""
    await hass.async_block_till_done()
    manager = repairs_flow_manager(hass)
    assert manager is not None
    result: dict[str, Any] = await manager.async_init(DOMAIN, context={"issue_id": issue_id})
    return result


@pytest.fixture(scope="session")
def speech() -> bytes:
    """A real spoken command (espeak-ng), 16 kHz mono, as the device microphone sends it."""
    return speech_pcm("turn on the kitchen light")


async def async_fix(
    hass: HomeAssistant, flow_id: str, user_input: dict[str, Any]
) -> dict[str, Any]:
    """Submit a step of a repair's fix flow."""
    manager = repairs_flow_manager(hass)
    assert manager is not None
    result: dict[str, Any] = await manager.async_configure(flow_id, user_input)
    await hass.async_block_till_done()
    return result


async def async_enter_code(hass: HomeAssistant, device_id: str, code: str) -> dict[str, Any]:
    """Do what the user does: open the new device's repair ("Add ...") and type the code."""
    form = await async_start_fix(hass, waiting_issue_id(device_id))
    return await async_fix(hass, form["flow_id"], {"code": code})


@pytest.fixture
async def make_device(
    hass: HomeAssistant,
    ota_url: str,
) -> AsyncIterator[Callable[..., Coroutine[Any, Any, DeviceEmulator]]]:
    """Return a factory of emulated devices that booted (OTA check done); closes them after."""
    devices: list[DeviceEmulator] = []

    async def _make(**kwargs: Any) -> DeviceEmulator:
        kwargs.setdefault("relisten", False)  # tests that want a follow-up turn ask for it
        device = DeviceEmulator(ota_url, **kwargs)
        devices.append(device)
        await device.check_ota()
        if (code := device.activation_code) is not None:
            await async_enter_code(hass, device.device_id, code)
            await device.activate(poll_s=0.01)
            await device.check_ota()
        return device

    yield _make
    for device in devices:
        await device.close()


# --- loopback cloud services (tests/cloud_servers.py) ---------------------------------------------


@pytest.fixture(scope="session")
def mp3() -> bytes:
    """A short MP3 clip like the ones Edge sends."""
    return mp3_clip()


@pytest.fixture
async def dashscope(socket_enabled: None) -> AsyncIterator[DashScopeServer]:
    """A DashScope endpoint on loopback; fails the test if a command was malformed."""
    server = await DashScopeServer().start()
    yield server
    await server.close()
    assert server.errors == []


@pytest.fixture
async def edge_server(socket_enabled: None, mp3: bytes) -> AsyncIterator[EdgeServer]:
    """The Edge service on loopback, with edge-tts pointed at it (its URLs are constants)."""
    server = await EdgeServer(mp3).start()
    with (
        patch("edge_tts.communicate.WSS_URL", server.wss_url),
        patch("edge_tts.voices.VOICE_LIST", server.voices_url),
    ):
        yield server
    await server.close()
    assert server.errors == []


@pytest.fixture
async def black_hole(socket_enabled: None) -> AsyncIterator[BlackHole]:
    """A port that accepts connections and never answers."""
    hole = await BlackHole().start()
    yield hole
    await hole.close()
