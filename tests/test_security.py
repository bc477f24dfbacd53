"""Attacks on the device endpoints, each as described in the README's Safety section.

Real HA in process, real HTTP and WebSocket over loopback; other addresses come through
`X-Forwarded-For` from a trusted proxy (loopback), as HA behind a proxy sees them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
import gc
import json
import logging
import resource
import time
import tracemalloc
from typing import Any
import uuid

import aiohttp
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr, issue_registry as ir
from homeassistant.setup import async_setup_component
from homeassistant.util import dt as dt_util
import pytest
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_fire_time_changed,
)
from yarl import URL

from custom_components.xiaozhi.assist_satellite import TYPED_TEXT_GRACE_S
from custom_components.xiaozhi.const import (
    DOMAIN,
    MAX_PENDING_ACTIVATIONS,
    MAX_PENDING_PER_ADDRESS,
    MAX_TRACKED_ADDRESSES,
    STORAGE_KEY,
)
from custom_components.xiaozhi.core import CloseCode
from custom_components.xiaozhi.hub import XiaozhiHub
from tools.emulator import DeviceEmulator, random_device_id

from .conftest import async_enter_code

type MakeDevice = Callable[..., Coroutine[Any, Any, DeviceEmulator]]
FLOOD = 1000
FLOOD_CONCURRENCY = 50
MAX_FLOOD_HELD_BYTES = 512 * 1024  # what the integration still holds afterwards


@pytest.fixture
async def ha_core(hass: HomeAssistant) -> None:
    """HA behind a proxy on loopback: devices' addresses come from X-Forwarded-For."""
    assert await async_setup_component(
        hass,
        "http",
        {"http": {"use_x_forwarded_for": True, "trusted_proxies": ["127.0.0.0/8"]}},
    )
    for component in ("homeassistant", "websocket_api", "config", "repairs"):
        assert await async_setup_component(hass, component, {})


class DeviceAt(DeviceEmulator):
    """An emulated device at another address (through the trusted proxy)."""

    def __init__(self, *args: Any, address: str, body_board: str | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.address = address
        self.body_board = body_board

    def system_info(self) -> dict[str, Any]:
        info = super().system_info()
        if self.body_board is not None:
            info["board"]["type"] = self.body_board
        return info

    def ota_headers(self) -> dict[str, str]:
        return {**super().ota_headers(), "X-Forwarded-For": self.address}

    def channel_headers(self, token: str) -> dict[str, str]:
        return {**super().channel_headers(token), "X-Forwarded-For": self.address}


def hub(hass: HomeAssistant) -> XiaozhiHub:
    result: XiaozhiHub = hass.config_entries.async_entries(DOMAIN)[0].runtime_data
    return result


async def post_ota(
    url: str, headers: dict[str, str], body: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, data=json.dumps(body), headers=headers) as response,
    ):
        return response.status, await response.json()


async def refused(device: DeviceEmulator, status: int = 403, **kwargs: Any) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await device.connect(**kwargs)
    assert info.value.status == status


def waiting_repairs(hass: HomeAssistant) -> list[ir.IssueEntry]:
    """The repairs that ask for a new device's code (the hub's "Add <device>")."""
    return [
        issue
        for (domain, _), issue in ir.async_get(hass).issues.items()
        if domain == DOMAIN and issue.translation_key == "device_waiting" and issue.active
    ]


# --- B.1: a bound device is its (MAC, Client-Id) pair ---------------------------------------------


async def test_a_bound_mac_alone_gets_nothing(
    hass: HomeAssistant, make_device: MakeDevice, ota_url: str
) -> None:
    device = await make_device()
    token = device.ota_answer["websocket"]["token"]
    registry = dr.async_get(hass)
    entry_id = hass.config_entries.async_entries(DOMAIN)[0].entry_id
    before = registry.async_get_device_by_identifier((DOMAIN, device.device_id), entry_id)
    stored_before = hub(hass).devices[device.device_id].stored()
    evil = {**device.system_info(), "board": {"type": "evil-board"}}
    evil["application"] = {"version": "6.6.6"}

    # The MAC only: no Client-Id header and no uuid in the body.
    headers = {k: v for k, v in device.ota_headers().items() if k != "Client-Id"}
    status, answer = await post_ota(ota_url, headers, {**evil, "uuid": ""})
    assert status == 400
    assert token not in json.dumps(answer)
    # The MAC in the body only, no headers at all.
    status, answer = await post_ota(ota_url, {}, {"mac_address": device.device_id})
    assert status == 400
    status, answer = await post_ota(
        ota_url, {}, {"mac_address": device.device_id, "uuid": str(uuid.uuid4())}
    )
    assert status == 200
    assert token not in json.dumps(answer)
    assert "activation" in answer  # treated like an unknown device
    # The MAC with another Client-Id.
    status, answer = await post_ota(
        ota_url, {**device.ota_headers(), "Client-Id": str(uuid.uuid4())}, evil
    )
    assert status == 200
    assert token not in json.dumps(answer)
    assert answer["websocket"]["token"] != token
    assert "activation" in answer
    await hass.async_block_till_done()
    assert waiting_repairs(hass) == []  # a bound MAC is not offered as a new device

    # The WebSocket wants the pair too, even with the real token.
    for client_id in ("", str(uuid.uuid4())):
        thief = DeviceEmulator(ota_url, device_id=device.device_id)
        thief.client_id = client_id
        assert device.ota_answer is not None
        thief.use_ota_answer(device.ota_answer)
        try:
            await refused(thief)
        finally:
            await thief.close()

    # Nothing about the bound device changed, and it still works.
    assert hub(hass).devices[device.device_id].stored() == stored_before
    after = registry.async_get_device_by_identifier((DOMAIN, device.device_id), entry_id)
    assert after is not None and before is not None
    assert (after.model, after.sw_version) == (before.model, before.sw_version)
    assert (await device.check_ota())["websocket"]["token"] == token
    assert await device.connect() is not None


async def test_a_reflashed_device_gets_a_repair_and_can_be_added_again(
    hass: HomeAssistant, make_device: MakeDevice, hass_ws_client: Any
) -> None:
    device = await make_device()
    old_token = device.ota_answer["websocket"]["token"]
    reflashed = DeviceEmulator(device.ota_url, device_id=device.device_id)  # NVS erased
    try:
        answer = await reflashed.check_ota()
        assert "activation" in answer
        issue_id = f"device_identity_changed_{device.device_id.replace(':', '')}"
        issue = ir.async_get(hass).async_get_issue(DOMAIN, issue_id)
        assert issue is not None
        assert issue.translation_placeholders == {
            "device": hub(hass).devices[device.device_id].name,
            "mac": device.device_id,
        }
        # What the repair says: delete the device, restart it, enter its new code.
        registry_device = dr.async_get(hass).async_get_device_by_identifier(
            (DOMAIN, device.device_id), hass.config_entries.async_entries(DOMAIN)[0].entry_id
        )
        assert registry_device is not None
        client = await hass_ws_client(hass)
        assert (await client.remove_device(registry_device.id))["success"]
        await hass.async_block_till_done()
        assert ir.async_get(hass).async_get_issue(DOMAIN, issue_id) is None
        answer = await reflashed.check_ota()
        result = await async_enter_code(hass, device.device_id, answer["activation"]["code"])
        assert result["reason"] == "added_without_voice"  # added; no Assistant can hear here
        await reflashed.check_ota()
        assert await reflashed.connect() is not None
        assert hub(hass).devices[device.device_id].client_id == reflashed.client_id
        await refused(device, token=old_token)  # the old identity is gone
    finally:
        await reflashed.close()


async def test_devices_bound_before_client_ids_are_migrated(
    hass: HomeAssistant,
    ha_core: None,
    hass_client_no_auth: Any,
    socket_enabled: None,
    hass_storage: dict[str, Any],
) -> None:
    mac, token = "02:00:00:00:00:42", "a-token-from-the-previous-version-0123456789"
    entry = MockConfigEntry(
        domain=DOMAIN,
        title="Xiaozhi",
        data={"devices": {mac: {"board": "old-board", "token": token}}},
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    client = await hass_client_no_auth()
    ota_url = str(client.make_url("/xiaozhi/ota/"))
    assert "devices" not in entry.data  # moved to the store
    assert hass_storage[STORAGE_KEY]["data"]["devices"][mac]["client_id"] is None

    device = DeviceEmulator(ota_url, device_id=mac)
    impostor = DeviceEmulator(ota_url, device_id=mac)
    try:
        answer = await device.check_ota()
        # No token key: the device keeps the one in its NVS (an omitted key is not erased).
        assert "token" not in answer["websocket"]
        assert "activation" not in answer
        assert await device.connect(token=token) is not None  # the token proves it
        assert hass_storage[STORAGE_KEY]["data"]["devices"][mac]["client_id"] == device.client_id
        # From now on the pair is checked.
        assert (await device.check_ota())["websocket"]["token"] == token
        assert "activation" in await impostor.check_ota()
        assert device.ota_answer is not None
        impostor.use_ota_answer(device.ota_answer)
        await refused(impostor, token=token)
    finally:
        await device.close()
        await impostor.close()
        assert await hass.config_entries.async_unload(entry.entry_id)


# --- B.2: one channel per device, race-free; per-address and per-hub limits -----------------------


async def test_simultaneous_connections_leave_one_open(
    hass: HomeAssistant, make_device: MakeDevice
) -> None:
    first = await make_device()
    copies = [
        DeviceEmulator(
            first.ota_url, device_id=first.device_id, client_id=first.client_id, relisten=False
        )
        for _ in range(5)
    ]
    for copy in copies:
        assert first.ota_answer is not None
        copy.use_ota_answer(first.ota_answer)
    try:
        await asyncio.gather(*(c.connect(hello=False) for c in copies))
        await asyncio.sleep(0.3)
        open_ = [c for c in copies if not c.closed]
        assert len(open_) == 1
        assert all(c.close_code == CloseCode.REPLACED for c in copies if c.closed)
        assert len(hub(hass).sessions) == 1
    finally:
        for copy in copies:
            await copy.close()


async def test_channel_limits(
    hass: HomeAssistant, make_device: MakeDevice, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("custom_components.xiaozhi.core.server.MAX_CONNECTIONS", 2)
    monkeypatch.setattr("custom_components.xiaozhi.core.server.MAX_CHANNELS_PER_ADDRESS", 2)
    url = None
    one, two = await make_device(), await make_device()
    url = one.ota_url
    await one.connect()
    await two.connect()
    three = await make_device()
    await refused(three, status=503)  # two devices connected (and two channels from loopback)
    monkeypatch.setattr("custom_components.xiaozhi.core.server.MAX_CHANNELS_PER_ADDRESS", 10)
    await refused(three, status=503)  # the hub's cap counts devices
    again = DeviceEmulator(url, device_id=one.device_id, client_id=one.client_id)
    assert one.ota_answer is not None
    again.use_ota_answer(one.ota_answer)
    try:
        assert await again.connect() is not None  # a connected device can always replace its own
        assert await one.wait_closed(timeout=5) == CloseCode.REPLACED
    finally:
        await again.close()


# --- B.4: activation is bounded -------------------------------------------------------------------


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def test_a_flood_of_made_up_devices_stays_bounded(
    hass: HomeAssistant, ota_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)  # the capture would keep every request's debug lines
    statuses: dict[int, int] = {}
    real = DeviceAt(ota_url, address="192.168.1.50", relisten=False)
    template = real.system_info()
    gate = asyncio.Semaphore(FLOOD_CONCURRENCY)

    async def one(http: aiohttp.ClientSession, number: int, spread: bool) -> None:
        address = f"10.66.{number // 250}.{number % 250 + 1}" if spread else "10.66.0.1"
        mac = random_device_id()
        body = {**template, "mac_address": mac, "uuid": str(uuid.uuid4())}
        body["board"] = {"type": "\x1b[31m[x](http://e.vil){name}" * 9}
        headers = {"Device-Id": mac, "X-Forwarded-For": address}
        async with gate, http.post(ota_url, data=json.dumps(body), headers=headers) as response:
            statuses[response.status] = statuses.get(response.status, 0) + 1

    async def flood(http: aiohttp.ClientSession, spread: bool, count: int = FLOOD) -> None:
        await asyncio.gather(*(one(http, n, spread) for n in range(count)))

    started = time.monotonic()
    try:
        async with aiohttp.ClientSession() as http:
            await flood(http, spread=True, count=FLOOD // 10)  # warm up, and fill the caps
            await hass.async_block_till_done()
            gc.collect()
            rss_before = rss_mib()
            tracemalloc.start()
            # Many addresses: cut by the hub's caps.
            await flood(http, spread=True)
            await hass.async_block_till_done()
            gc.collect()
            held = sum(
                stat.size
                for stat in tracemalloc.take_snapshot()
                .filter_traces([tracemalloc.Filter(True, "*custom_components/xiaozhi/*")])
                .statistics("filename")
            )
            tracemalloc.stop()
            growth = rss_mib() - rss_before
            assert held < MAX_FLOOD_HELD_BYTES
            activations = hub(hass).activations
            assert len(activations.pending) <= MAX_PENDING_ACTIVATIONS
            assert len(waiting_repairs(hass)) <= MAX_PENDING_ACTIVATIONS
            assert len(activations._checkins._windows) <= MAX_TRACKED_ADDRESSES
            # Board names are cleaned before they reach a title.
            for issue in waiting_repairs(hass):
                assert issue.translation_placeholders is not None
                name = issue.translation_placeholders["name"]
                assert not any(c in name for c in "\x1b[](){}")
                assert len(name) <= 40 + 1 + 4
            spread_statuses = dict(statuses)
            # One address, after the caps emptied: cut per address; a real device gets in.
            activations.pending.clear()
            statuses.clear()
            attack = asyncio.ensure_future(flood(http, spread=False))
            code = (await real.check_ota())["activation"]["code"]
            await attack
            assert statuses.get(200, 0) <= MAX_PENDING_PER_ADDRESS
            result = await async_enter_code(hass, real.device_id, code)
            assert result["reason"] == "added_without_voice"  # added; no Assistant can hear here
            await real.activate(poll_s=0.01)
            await real.check_ota()
            assert await real.connect() is not None
    finally:
        await real.close()
    print(
        f"flood: {FLOOD} made-up devices from {FLOOD} addresses: {spread_statuses}, "
        f"then {FLOOD} from one address: {statuses}; {time.monotonic() - started:.1f} s in all; "
        f"held by the integration after the first {FLOOD}: {held / 1024:.0f} KiB, "
        f"peak RSS +{growth:.1f} MiB"
    )


async def test_codes_and_their_repairs_expire(
    hass: HomeAssistant, ota_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("custom_components.xiaozhi.activation.ACTIVATION_CODE_TTL_S", 0.2)
    device = DeviceEmulator(ota_url)
    try:
        await device.check_ota()
        await hass.async_block_till_done()
        assert len(waiting_repairs(hass)) == 1
        await asyncio.sleep(0.3)
        async_fire_time_changed(hass, dt_util.utcnow() + dt_util.dt.timedelta(seconds=31))
        await hass.async_block_till_done()
        assert waiting_repairs(hass) == []
        assert hub(hass).activations.pending == {}
        # A device that is still there gets a new code, and a new repair.
        assert "activation" in await device.check_ota()
        await hass.async_block_till_done()
        assert len(waiting_repairs(hass)) == 1
    finally:
        await device.close()


async def test_local_network_mode_is_capped_and_not_for_browsers(
    hass: HomeAssistant, ota_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("custom_components.xiaozhi.hub.MAX_DEVICES_WITHOUT_CODE", 2)
    entry = hass.config_entries.async_entries(DOMAIN)[0]
    hass.config_entries.async_update_entry(entry, options={"auth_mode": "local_network"})
    devices = [DeviceEmulator(ota_url) for _ in range(3)]
    page = DeviceEmulator(ota_url)
    try:
        _, answer = await post_ota(
            ota_url, {**page.ota_headers(), "Origin": "http://evil.example"}, page.system_info()
        )
        assert "activation" in answer  # a web page never skips the code
        assert "activation" not in await devices[0].check_ota()
        assert "activation" not in await devices[1].check_ota()
        assert "activation" in await devices[2].check_ota()  # the cap: codes again
    finally:
        for device in (*devices, page):
            await device.close()


# --- B.5: bindings on disk before 200; read deadlines; credentials in URLs ------------------------


async def test_the_binding_is_on_disk_before_activate_answers_200(
    hass: HomeAssistant, ota_url: str, hass_storage: dict[str, Any]
) -> None:
    device = DeviceEmulator(ota_url)
    try:
        code = (await device.check_ota())["activation"]["code"]
        await async_enter_code(hass, device.device_id, code)
        await device.activate(poll_s=0.01)
        # "Killed" right after the 200: no more event loop turns, no delayed save.
        stored = hass_storage[STORAGE_KEY]["data"]["devices"][device.device_id]
        assert stored["client_id"] == device.client_id
        assert stored["token"] == device.ota_answer["websocket"]["token"]
    finally:
        await device.close()


async def test_an_endless_body_is_cut(
    hass: HomeAssistant, ota_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("custom_components.xiaozhi.core.server.BODY_READ_TIMEOUT_S", 0.5)
    url = URL(ota_url)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    writer.write(
        f"POST {url.path} HTTP/1.1\r\nHost: {url.host}\r\nDevice-Id: 02:00:00:00:00:01\r\n"
        "Transfer-Encoding: chunked\r\n\r\n".encode()
    )
    started = time.monotonic()
    try:
        async with asyncio.timeout(5):
            while not reader.at_eof():
                writer.write(b"1\r\n{\r\n")  # one byte every 50 ms, forever
                await writer.drain()
                with __import__("contextlib").suppress(TimeoutError):
                    async with asyncio.timeout(0.05):
                        line = await reader.readline()
                        if line.startswith(b"HTTP/1.1"):
                            assert line.split()[1] == b"408"
                            break
    finally:
        writer.close()
    assert time.monotonic() - started < 2


async def test_url_credentials_are_redacted_in_logs(
    hass: HomeAssistant, ota_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    logging.getLogger("custom_components.xiaozhi.stt").warning(
        "stt.x: cannot reach %s", "http://user:s3cret@stt.example/v1"
    )
    assert "s3cret" not in caplog.text
    assert "http://**REDACTED**@stt.example/v1" in caplog.text


# --- C.4, C.5: clients other than the firmware ----------------------------------------------------


async def test_the_first_answers_token_works_once_bound(hass: HomeAssistant, ota_url: str) -> None:
    device = DeviceEmulator(ota_url)
    try:
        answer = await device.check_ota()
        assert {"websocket", "activation"} <= set(answer)
        token = answer["websocket"]["token"]
        code = answer["activation"]["code"]
        # Before the code is entered the channel opens (clients connect before activating),
        # but all it does is show the code again: typed or spoken words reach nothing.
        assert await device.connect() is not None
        assert code in (await device.wait_for("alert"))["message"]
        shown = len(device.received.messages)
        await device.send_text_input("turn on the kitchen light")
        await device.listen_start()
        assert code in (await device.wait_for("alert", after=shown))["message"]
        await asyncio.sleep(TYPED_TEXT_GRACE_S + 0.2)
        assert device.received.of_type("stt") == []
        assert hub(hass).devices.get(device.device_id) is None
        await device.close()
        await async_enter_code(hass, device.device_id, code)
        assert await device.connect() is not None
        assert (await device.check_ota())["websocket"]["token"] == token
    finally:
        await device.close()


async def test_web_clients_authenticate_with_query_parameters(
    hass: HomeAssistant, make_device: MakeDevice
) -> None:
    device = await make_device()
    websocket = device.ota_answer["websocket"]
    query = {
        "device-id": device.device_id,
        "client-id": device.client_id,
        "authorization": f"Bearer {websocket['token']}",
    }
    url = URL(websocket["url"]).with_query(query)
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(url) as ws:  # no headers, as a browser
            await ws.send_json(device.client_hello().to_dict())
            hello = await ws.receive_json(timeout=5)
            assert hello["type"] == "hello"
        # Headers win over the query.
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await http.ws_connect(url, headers={"Authorization": "Bearer wrong"})
        assert info.value.status == 403


@pytest.mark.parametrize("path", ["/xiaozhi/ota/", "/xiaozhi/ota/activate"])
async def test_cors_on_the_device_endpoints(hass: HomeAssistant, ota_url: str, path: str) -> None:
    url = URL(ota_url).with_path(path)
    origin = "http://192.168.1.20:8080"
    async with aiohttp.ClientSession() as http:
        async with http.options(
            url,
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type,device-id,client-id",
            },
        ) as response:
            assert response.status == 204
            assert response.headers["Access-Control-Allow-Origin"] == origin
            assert "POST" in response.headers["Access-Control-Allow-Methods"]
            allowed = response.headers["Access-Control-Allow-Headers"].lower()
            assert {"content-type", "device-id", "client-id"} <= {
                h.strip() for h in allowed.split(",")
            }
        device = DeviceEmulator(ota_url)
        async with http.post(
            url,
            data=json.dumps(device.system_info()),
            headers={**device.ota_headers(), "Origin": origin},
        ) as response:
            assert response.headers["Access-Control-Allow-Origin"] == origin
        ws_url = URL(ota_url).with_path("/xiaozhi/v1/")
        async with http.options(ws_url, headers={"Origin": origin}) as response:
            assert "Access-Control-Allow-Headers" not in response.headers
