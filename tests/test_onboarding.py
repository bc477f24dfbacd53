"""Onboarding: activation codes through a repair's fix flow, per-device tokens, revocation."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
import logging
from typing import Any

import aiohttp
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers import (
    area_registry as ar,
    device_registry as dr,
    issue_registry as ir,
)
import pytest

from custom_components.xiaozhi.activation import waiting_issue_id
from custom_components.xiaozhi.const import DOMAIN, MAX_ACTIVATION_ATTEMPTS
from custom_components.xiaozhi.core import CloseCode
from custom_components.xiaozhi.hub import XiaozhiHub
from tools.emulator import DeviceEmulator

from .conftest import async_fix, async_start_fix

type MakeDevice = Callable[..., Coroutine[Any, Any, DeviceEmulator]]


def hub(hass: HomeAssistant) -> XiaozhiHub:
    result: XiaozhiHub = hass.config_entries.async_entries(DOMAIN)[0].runtime_data
    return result


async def activate_status(device: DeviceEmulator) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.post(device.ota_url + "activate", data="{}", headers=device.ota_headers()) as response,
    ):
        return response.status


async def test_new_device_is_added_with_its_code(
    hass: HomeAssistant, ota_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    device = DeviceEmulator(ota_url, language="zh-CN")
    try:
        answer = await device.check_ota()
        # The channel to be, for clients that read it from the first answer (it opens once
        # the device is bound), and the activation the firmware runs first.
        assert set(answer) == {"server_time", "firmware", "websocket", "activation"}
        code = answer["activation"]["code"]
        assert len(code) == 6
        assert code.isdigit()
        assert code in answer["activation"]["message"]
        assert "验证码" in answer["activation"]["message"]  # the device's language
        assert answer["activation"]["challenge"]
        assert await activate_status(device) == 202

        # Repairs shows "Add <the name the device will have>", with the MAC in its text.
        await hass.async_block_till_done()
        issue = ir.async_get(hass).async_get_issue(DOMAIN, waiting_issue_id(device.device_id))
        assert issue is not None
        assert issue.is_fixable
        suffix = device.device_id.replace(":", "")[-4:].upper()
        assert issue.translation_placeholders == {
            "name": f"xiaozhi-emulator {suffix}",
            "mac": device.device_id,
        }
        # The same code while it is valid (the device re-checks after its polls).
        assert (await device.check_ota())["activation"]["code"] == code

        wrong = "000000" if code != "000000" else "111111"
        form = await async_start_fix(hass, waiting_issue_id(device.device_id))
        assert form["description_placeholders"]["attempts"] == str(MAX_ACTIVATION_ATTEMPTS)
        result = await async_fix(hass, form["flow_id"], {"code": wrong})
        assert result["type"] is FlowResultType.FORM
        assert result["errors"] == {"code": "invalid_code"}
        assert result["description_placeholders"]["attempts"] == str(MAX_ACTIVATION_ATTEMPTS - 1)
        area = ar.async_get(hass).async_create("Kitchen")
        result = await async_fix(hass, result["flow_id"], {"code": code, "area": area.id})
        assert result["type"] is FlowResultType.ABORT
        # No Assistant here can hear (no speech-to-text): added, and told so, not a dead device.
        assert result["reason"] == "added_without_voice"
        assert (
            ir.async_get(hass).async_get_issue(DOMAIN, waiting_issue_id(device.device_id)) is None
        )

        assert await activate_status(device) == 200
        answer = await device.check_ota()
        assert "activation" not in answer  # bound: no activation loop
        token = answer["websocket"]["token"]
        assert len(token) >= 40
        assert await device.connect() is not None
        registry = dr.async_get(hass)
        entry_id = hass.config_entries.async_entries(DOMAIN)[0].entry_id
        added = registry.async_get_device_by_identifier((DOMAIN, device.device_id), entry_id)
        assert added is not None
        assert added.area_id == area.id
        # (The test harness's stand-in for HA's storage logs what it writes; HA does not.)
        ours = [r for r in caplog.records if not r.name.startswith("pytest_homeassistant")]
        assert not [r for r in ours if token in r.getMessage()]
    finally:
        await device.close()


async def test_wrong_codes_are_rate_limited(hass: HomeAssistant, ota_url: str) -> None:
    device = DeviceEmulator(ota_url)
    try:
        code = (await device.check_ota())["activation"]["code"]
        wrong = "000000" if code != "000000" else "111111"
        flow_id = (await async_start_fix(hass, waiting_issue_id(device.device_id)))["flow_id"]
        for attempt in range(1, MAX_ACTIVATION_ATTEMPTS + 1):
            result = await async_fix(hass, flow_id, {"code": wrong})
            if attempt < MAX_ACTIVATION_ATTEMPTS:
                assert result["errors"] == {"code": "invalid_code"}
        # The old code is dead; the form stays open for the new one the device gets next.
        assert result["type"] is FlowResultType.FORM
        assert result["errors"] == {"code": "too_many_attempts"}
        assert result["description_placeholders"]["attempts"] == str(MAX_ACTIVATION_ATTEMPTS)
        result = await async_fix(hass, flow_id, {"code": code})
        assert result["errors"] == {"code": "invalid_code"}
        answer = await device.check_ota()
        new_code = answer["activation"]["code"]
        assert new_code != code
        assert device.device_id not in hub(hass).devices
        result = await async_fix(hass, flow_id, {"code": new_code})
        assert result["type"] is FlowResultType.ABORT
        assert result["reason"] == "added_without_voice"
    finally:
        await device.close()


async def test_only_the_right_token_opens_a_channel(
    hass: HomeAssistant, make_device: MakeDevice
) -> None:
    first = await make_device()
    second = await make_device()
    assert first.ota_answer["websocket"]["token"] != second.ota_answer["websocket"]["token"]
    for token in ("", "made-up-token", second.ota_answer["websocket"]["token"]):
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await first.connect(token=token)
        assert info.value.status == 403
    assert await first.connect() is not None


async def test_unknown_device_cannot_connect(hass: HomeAssistant, ota_url: str) -> None:
    device = DeviceEmulator(ota_url)
    try:
        url = ota_url.replace("http://", "ws://").replace("/ota/", "/v1/")
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await device.connect(url=url, token="anything")
        assert info.value.status == 403
    finally:
        await device.close()


async def test_removed_device_is_revoked(
    hass: HomeAssistant, make_device: MakeDevice, hass_ws_client: Any
) -> None:
    device = await make_device()
    await device.connect()
    registry = dr.async_get(hass)
    entry = hass.config_entries.async_entries(DOMAIN)[0]
    registry_device = registry.async_get_device_by_identifier(
        (DOMAIN, device.device_id), entry.entry_id
    )
    assert registry_device is not None
    client = await hass_ws_client(hass)  # what the UI's "Delete device" does
    response = await client.remove_device(registry_device.id)
    assert response["success"]
    await hass.async_block_till_done()

    assert await device.wait_closed(timeout=5) == CloseCode.POLICY_VIOLATION
    assert device.device_id not in hub(hass).devices
    assert device.device_id not in str(entry.data)
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await device.connect()  # its old token
    assert info.value.status == 403
    assert "activation" in await device.check_ota()  # it starts over


async def set_options(hass: HomeAssistant, **options: Any) -> None:
    """Change who may add a device, as the options' "Who may add a device" step does."""
    entry = hass.config_entries.async_entries(DOMAIN)[0]
    result = await hass.config_entries.options.async_init(entry.entry_id)
    assert result["type"] is FlowResultType.MENU
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"next_step_id": "security"}
    )
    result = await hass.config_entries.options.async_configure(result["flow_id"], options)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()


async def test_local_network_mode_skips_the_code_and_warns(
    hass: HomeAssistant, ota_url: str
) -> None:
    issues = ir.async_get(hass)
    await set_options(hass, auth_mode="local_network")
    assert issues.async_get_issue(DOMAIN, "open_to_local_network") is not None
    device = DeviceEmulator(ota_url)
    try:
        answer = await device.check_ota()  # from 127.0.0.1: a local address
        assert "activation" not in answer
        assert await device.connect() is not None
    finally:
        await device.close()
    # Back to the safe default: the warning goes, new devices need their code again.
    await set_options(hass, auth_mode="bound")
    assert issues.async_get_issue(DOMAIN, "open_to_local_network") is None
    stranger = DeviceEmulator(ota_url)
    try:
        assert "activation" in await stranger.check_ota()
    finally:
        await stranger.close()


async def test_allow_list_mode(hass: HomeAssistant, ota_url: str) -> None:
    await set_options(
        hass, auth_mode="allow_list", allowed_devices="AA:BB:CC:DD:EE:01, aa-bb-cc-dd-ee-02"
    )
    listed = DeviceEmulator(ota_url, device_id="aa:bb:cc:dd:ee:02")
    other = DeviceEmulator(ota_url, device_id="aa:bb:cc:dd:ee:03")
    try:
        assert "websocket" in await listed.check_ota()
        assert await listed.connect() is not None
        assert "activation" in await other.check_ota()
    finally:
        await listed.close()
        await other.close()


async def test_a_device_that_keeps_failing_gets_a_repair(
    hass: HomeAssistant, make_device: MakeDevice
) -> None:
    device = await make_device()
    issues = ir.async_get(hass)
    issue_id = f"device_auth_failing_{device.device_id.replace(':', '')}"
    for _ in range(3):
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await device.connect(token="token-from-an-old-backup")
    issue = issues.async_get_issue(DOMAIN, issue_id)
    assert issue is not None
    assert issue.translation_placeholders["mac"] == device.device_id
    assert await device.connect() is not None  # rebooted: it has its token again
    assert issues.async_get_issue(DOMAIN, issue_id) is None


async def test_a_loopback_channel_url_for_a_lan_device_gets_a_repair(
    hass: HomeAssistant, make_device: MakeDevice
) -> None:
    device = await make_device()
    issues = ir.async_get(hass)
    hub_ = hub(hass)
    hub_._async_check_reachable("ws://127.0.0.1:8123/xiaozhi/v1/", "192.168.1.50")
    issue = issues.async_get_issue(DOMAIN, "unreachable_url")
    assert issue is not None
    assert issue.translation_placeholders == {
        "url": "ws://127.0.0.1:8123/xiaozhi/v1/",
        "example_url": "http://192.168.1.10:8123/xiaozhi/ota/",
    }
    await device.check_ota()  # a loopback device reaching a loopback URL is fine
    assert issues.async_get_issue(DOMAIN, "unreachable_url") is None
