"""The add-on's own jobs: its options and secret, telling the Supervisor, guessers, bad links."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
import json
import logging
from pathlib import Path
import stat
from typing import Any

import aiohttp
from aiohttp import web
import pytest

from custom_components.xiaozhi.core.link import LINK_VERSION

from .addon import SECRET, AddonHost, AddonOptions, addon_url, free_port, wait_until

from xiaozhi_addon.host import (  # isort: skip
    MAX_REFUSALS_PER_ADDRESS,
    MAX_TRACKED_ADDRESSES,
    RefusalLimiter,
)


def test_a_secret_is_made_once_and_kept_private(tmp_path: Path) -> None:
    options = tmp_path / "options.json"
    options.write_text(json.dumps({"log_level": "LOUD", "link_secret": ""}))
    first = AddonOptions.load(options, tmp_path / "data")
    assert first.secret_generated
    assert len(first.link_secret) >= 40
    assert first.log_level == "info"  # an unknown level falls back
    kept = tmp_path / "data" / "link_secret"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    again = AddonOptions.load(options, tmp_path / "data")
    assert again.link_secret == first.link_secret
    assert not again.secret_generated
    options.write_text(json.dumps({"log_level": "debug", "link_secret": "chosen"}))
    chosen = AddonOptions.load(options, tmp_path / "data")
    assert (chosen.link_secret, chosen.log_level) == ("chosen", "debug")


@pytest.fixture
async def supervisor(socket_enabled: None) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A loopback Supervisor answering the two calls an add-on makes to be discovered."""
    announced: list[dict[str, Any]] = []

    async def info(request: web.Request) -> web.Response:
        assert request.headers["Authorization"] == "Bearer supervisor-token"
        return web.json_response({"result": "ok", "data": {"hostname": "local-xiaozhi"}})

    async def discovery(request: web.Request) -> web.Response:
        assert request.headers["Authorization"] == "Bearer supervisor-token"
        announced.append(await request.json())
        return web.json_response({"result": "ok", "data": {"uuid": "abc"}})

    app = web.Application()
    app.router.add_get("/addons/self/info", info)
    app.router.add_post("/discovery", discovery)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}", announced
    await runner.cleanup()


async def test_the_addon_announces_itself_to_the_supervisor(
    supervisor: tuple[str, list[dict[str, Any]]],
) -> None:
    url, announced = supervisor
    host = AddonHost(AddonOptions("info", SECRET), http_port=8003, supervisor_url=url)
    await host.announce("supervisor-token")
    assert announced == [
        {
            "service": "xiaozhi",
            "config": {"host": "local-xiaozhi", "port": 8003, "secret": SECRET},
        }
    ]


async def test_an_address_guessing_tokens_is_blocked(addon: AddonHost) -> None:
    headers = {
        "Device-Id": "aa:bb:cc:dd:ee:02",
        "Client-Id": "c2",
        "Authorization": "Bearer guess",
    }
    url = f"ws://127.0.0.1:{addon.websocket_port}/xiaozhi/v1/"
    statuses = []
    async with aiohttp.ClientSession() as http:
        for _ in range(MAX_REFUSALS_PER_ADDRESS + 1):
            try:
                await http.ws_connect(url, headers=headers)
            except aiohttp.WSServerHandshakeError as err:
                statuses.append(err.status)
    # HA is not linked: nobody is let in; after the limit the address is refused outright.
    assert statuses[:MAX_REFUSALS_PER_ADDRESS] == [403] * MAX_REFUSALS_PER_ADDRESS
    assert statuses[-1] == 429


@pytest.mark.parametrize(
    ("frame", "why"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "not an object"),
        ('{"type": "warp", "channel": 1}', "unknown link message"),
        ('{"type": "send", "channel": 1}', "bad link message"),
        ('{"type": "notice", "device": "d", "text": "t", "pcm": "%%"}', "bad link message"),
        (b"\x00\x01", "not a reply audio frame"),
    ],
)
async def test_a_bad_link_message_closes_the_link_not_the_addon(
    addon: AddonHost, caplog: pytest.LogCaptureFixture, frame: str | bytes, why: str
) -> None:
    async with aiohttp.ClientSession() as http:
        link = await http.ws_connect(
            f"{addon_url(addon)}/xiaozhi/link", headers={"Authorization": f"Bearer {SECRET}"}
        )
        await link.send_json({"type": "hello", "version": LINK_VERSION, "timezone_offset": 480})
        assert (await link.receive_json())["type"] == "hello"
        addon.gate.channels[1] = addon.gate.channels.get(1) or _placeholder_channel(addon)
        if isinstance(frame, bytes):
            await link.send_bytes(frame)
        else:
            await link.send_str(frame)
        with caplog.at_level(logging.WARNING):
            message = await asyncio.wait_for(link.receive(), 5)
        assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert any(why in record.getMessage() for record in caplog.records)
        await link.close()
        addon.gate.channels.pop(1, None)
        await wait_until(lambda: not addon.gate.linked)
        # The add-on still serves: HA links again.
        again = await http.ws_connect(
            f"{addon_url(addon)}/xiaozhi/link", headers={"Authorization": f"Bearer {SECRET}"}
        )
        await again.send_json({"type": "hello", "version": LINK_VERSION})
        assert (await again.receive_json())["type"] == "hello"
        await again.close()
        await wait_until(lambda: not addon.gate.linked)


def _placeholder_channel(addon: AddonHost) -> Any:
    """A channel with no device session yet, so messages addressed to channel 1 are parsed."""
    from xiaozhi_core.relay import RelayedChannel  # noqa: PLC0415 - the add-on's own core
    from xiaozhi_core.session import DeviceIdentity  # noqa: PLC0415

    return RelayedChannel(addon.gate, 1, DeviceIdentity("aa:bb:cc:dd:ee:03"), "t")


async def test_a_new_link_replaces_the_old_one(addon: AddonHost) -> None:
    headers = {"Authorization": f"Bearer {SECRET}"}
    async with aiohttp.ClientSession() as http:
        first = await http.ws_connect(f"{addon_url(addon)}/xiaozhi/link", headers=headers)
        await first.send_json({"type": "hello", "version": LINK_VERSION})
        assert (await first.receive_json())["type"] == "hello"
        second = await http.ws_connect(f"{addon_url(addon)}/xiaozhi/link", headers=headers)
        # The old link is closed as replaced; the new one is served.
        closing = await asyncio.wait_for(first.receive(), 5)
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        await second.send_json({"type": "hello", "version": LINK_VERSION})
        assert (await second.receive_json())["type"] == "hello"
        assert addon.gate.linked
        assert addon.gate.links_accepted == 2
        await first.close()
        await second.close()
        await wait_until(lambda: not addon.gate.linked)


def test_guesses_from_ever_new_addresses_keep_memory_bounded() -> None:
    now = [0.0]
    limiter = RefusalLimiter(lambda: now[0])
    for number in range(MAX_TRACKED_ADDRESSES + 500):
        limiter.refused(f"10.{number >> 16 & 255}.{number >> 8 & 255}.{number & 255}")
    assert len(limiter._refusals) == MAX_TRACKED_ADDRESSES
    # The newest are the ones kept: one more refusal from the last address still counts.
    last = f"10.0.{(MAX_TRACKED_ADDRESSES + 499) >> 8 & 255}.{(MAX_TRACKED_ADDRESSES + 499) & 255}"
    for _ in range(MAX_REFUSALS_PER_ADDRESS - 1):
        limiter.refused(last)
    assert limiter.blocked(last)
