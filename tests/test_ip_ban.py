"""Refused guesses feed Home Assistant's failed-login counter (and IP bans); known devices don't."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from ipaddress import ip_address
from typing import Any

import aiohttp
from homeassistant.components.http.ban import KEY_FAILED_LOGIN_ATTEMPTS
from homeassistant.core import HomeAssistant
from homeassistant.helpers import issue_registry as ir
from homeassistant.setup import async_setup_component
import pytest

from custom_components.xiaozhi.const import DOMAIN
from tools.emulator import DeviceEmulator

from .conftest import async_enter_code

type MakeDevice = Callable[..., Coroutine[Any, Any, DeviceEmulator]]
THRESHOLD = 100  # high enough that nothing is banned (a ban would be written to disk)
LOOPBACK = ip_address("127.0.0.1")


@pytest.fixture
async def ha_core(hass: HomeAssistant) -> None:
    """HA with login attempts counted, as a user who enabled IP bans has it."""
    assert await async_setup_component(
        hass, "http", {"http": {"ip_ban_enabled": True, "login_attempts_threshold": THRESHOLD}}
    )
    for component in ("homeassistant", "websocket_api", "config", "repairs"):
        assert await async_setup_component(hass, component, {})


async def refused(device: DeviceEmulator, **kwargs: Any) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await device.connect(**kwargs)
    assert info.value.status == 403


async def test_guesses_count_as_failed_logins(hass: HomeAssistant, make_device: MakeDevice) -> None:
    device = await make_device()
    token = device.ota_answer["websocket"]["token"]
    attempts = hass.http.app[KEY_FAILED_LOGIN_ATTEMPTS]
    before = attempts[LOOPBACK]
    made_up = DeviceEmulator(device.ota_url)  # a MAC nobody bound
    assert device.ota_answer is not None
    made_up.use_ota_answer(device.ota_answer)
    other_client = DeviceEmulator(device.ota_url, device_id=device.device_id)  # MAC + other id
    assert device.ota_answer is not None
    other_client.use_ota_answer(device.ota_answer)
    try:
        await refused(made_up, token="guessed")
        await refused(other_client, token=token)  # even with the real token
    finally:
        await made_up.close()
        await other_client.close()
    assert attempts[LOOPBACK] == before + 2
    assert await device.connect() is not None


async def test_a_bound_device_with_an_old_token_is_not_banned(
    hass: HomeAssistant, make_device: MakeDevice
) -> None:
    """HA restored from a backup: the device's NVS holds a token HA no longer knows."""
    device = await make_device()
    attempts = hass.http.app[KEY_FAILED_LOGIN_ATTEMPTS]
    before = attempts[LOOPBACK]
    for _ in range(THRESHOLD + 5):
        await refused(device, token="token-from-before-the-restore")
    assert attempts[LOOPBACK] == before  # never a failed login, so never banned
    issue_id = f"device_auth_failing_{device.device_id.replace(':', '')}"
    assert ir.async_get(hass).async_get_issue(DOMAIN, issue_id) is not None
    # What the repair says helps: a reboot, whose OTA check hands out the current token.
    await device.check_ota()
    assert await device.connect() is not None
    assert ir.async_get(hass).async_get_issue(DOMAIN, issue_id) is None


async def test_a_waiting_device_with_its_token_to_be_is_not_banned(
    hass: HomeAssistant, ota_url: str
) -> None:
    """Web clients connect with the token of the first answer before the code is entered."""
    device = DeviceEmulator(ota_url)
    attempts = hass.http.app[KEY_FAILED_LOGIN_ATTEMPTS]
    before = attempts[LOOPBACK]
    try:
        answer = await device.check_ota()
        # Not bound yet: the channel only shows the code, and it is no failed login.
        assert await device.connect() is not None
        assert answer["activation"]["code"] in (await device.wait_for("alert"))["message"]
        assert attempts[LOOPBACK] == before
        await device.close()
        await async_enter_code(hass, device.device_id, answer["activation"]["code"])
        assert await device.connect() is not None  # the same token, from the first answer
    finally:
        await device.close()
