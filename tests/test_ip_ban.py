"""Refused device tokens feed Home Assistant's own failed-login counter (and IP bans)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from ipaddress import ip_address
from typing import Any

import aiohttp
from homeassistant.components.http.ban import KEY_FAILED_LOGIN_ATTEMPTS
from homeassistant.core import HomeAssistant
from homeassistant.setup import async_setup_component
import pytest

from tools.emulator import DeviceEmulator

type MakeDevice = Callable[..., Coroutine[Any, Any, DeviceEmulator]]
THRESHOLD = 100  # high enough that nothing is banned (a ban would be written to disk)


@pytest.fixture
async def ha_core(hass: HomeAssistant) -> None:
    """HA with login attempts counted, as a user who enabled IP bans has it."""
    assert await async_setup_component(
        hass, "http", {"http": {"ip_ban_enabled": True, "login_attempts_threshold": THRESHOLD}}
    )
    for component in ("homeassistant", "websocket_api", "config"):
        assert await async_setup_component(hass, component, {})


async def test_refused_tokens_count_as_failed_logins(
    hass: HomeAssistant, make_device: MakeDevice
) -> None:
    device = await make_device()
    attempts = hass.http.app[KEY_FAILED_LOGIN_ATTEMPTS]
    before = attempts[ip_address("127.0.0.1")]
    for _ in range(3):
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await device.connect(token="stolen-or-stale")
    assert attempts[ip_address("127.0.0.1")] == before + 3
    assert await device.connect() is not None  # the right token still works
    assert attempts[ip_address("127.0.0.1")] == before + 3
