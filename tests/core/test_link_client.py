"""HA's end of the link (core/remote.py) against a loopback add-on: keepalive and dead links."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
import itertools
import time

import aiohttp
from aiohttp import web
import pytest

from custom_components.xiaozhi.core import remote
from custom_components.xiaozhi.core.link import LINK_PATH, LINK_VERSION, pack_mic_audio
from custom_components.xiaozhi.core.remote import LinkClient

HEARTBEAT_S = 0.05
IDLE_TIMEOUT_S = 0.4


class Gate:
    """The little of a DeviceGate a link needs before any device comes."""

    websocket_path = "/xiaozhi/v1/"

    def timezone_offset_minutes(self) -> int:
        return 480


class LoopbackAddon:
    """The add-on's link endpoint: it answers the hello, then records what HA sends."""

    def __init__(self, *, answers_pings: bool, floods: int = 0) -> None:
        self.answers_pings = answers_pings
        self.floods = floods  # microphone frames sent right after the hello, in one burst
        self.pings: list[float] = []
        self.closed_by_ha = 0

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=self.answers_pings)
        await ws.prepare(request)
        hello = await ws.receive_json()
        assert hello["type"] == "hello"
        await ws.send_json({"type": "hello", "version": LINK_VERSION})
        for _ in range(self.floods):
            await ws.send_bytes(pack_mic_audio(99, b"\0" * 1920))  # no such channel: dropped
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.PING:
                self.pings.append(time.monotonic())
        self.closed_by_ha += 1
        return ws


@asynccontextmanager
async def linked(addon: LoopbackAddon) -> AsyncIterator[LinkClient]:
    app = web.Application()
    app.router.add_get(LINK_PATH, addon.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    async with aiohttp.ClientSession() as http:
        client = LinkClient(Gate(), f"http://127.0.0.1:{port}", "secret", http)  # type: ignore[arg-type]
        client.start()
        try:
            yield client
        finally:
            await client.stop()
            await runner.cleanup()


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


@pytest.fixture(autouse=True)
def fast_keepalive(monkeypatch: pytest.MonkeyPatch, socket_enabled: None) -> None:
    monkeypatch.setattr(remote, "LINK_HEARTBEAT_S", HEARTBEAT_S)
    monkeypatch.setattr(remote, "LINK_IDLE_TIMEOUT_S", IDLE_TIMEOUT_S)


async def test_pings_keep_a_quiet_link_up() -> None:
    """An add-on with nothing to say still answers HA's pings: the link stays."""
    addon = LoopbackAddon(answers_pings=True)
    async with linked(addon) as client:
        await wait_until(lambda: client.linked)
        await asyncio.sleep(IDLE_TIMEOUT_S * 3)
        assert client.linked
        assert client.links == 1
        assert addon.closed_by_ha == 0


async def test_an_add_on_that_stops_answering_is_unlinked() -> None:
    """No pong and nothing else for LINK_IDLE_TIMEOUT_S: HA drops the link (and retries)."""
    addon = LoopbackAddon(answers_pings=False)
    async with linked(addon) as client:
        await wait_until(lambda: client.linked)
        linked_at = time.monotonic()
        await wait_until(lambda: addon.closed_by_ha == 1)
        assert time.monotonic() - linked_at >= IDLE_TIMEOUT_S - 0.05
        assert len(addon.pings) >= 3  # HA kept pinging every LINK_HEARTBEAT_S meanwhile
        assert "silent" in (client.last_error or "")


async def test_a_burst_of_microphone_audio_lets_the_loop_run_between_slices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Frames already read come without a yield, and each runs a device's voice detection;
    HA's loop still runs other work after every LINK_RECEIVE_SLICE of them."""
    loop = asyncio.get_running_loop()
    passes = 0  # passes of the loop, counted by a callback due on every one

    def count_passes() -> None:
        nonlocal passes
        passes += 1
        loop.call_soon(count_passes)

    handled_at: list[int] = []  # the pass in which each microphone frame was handled
    unpack = remote.unpack_mic_audio

    def recording_unpack(frame: bytes) -> tuple[int, bytes, list[tuple[float, float]] | None]:
        handled_at.append(passes)
        return unpack(frame)

    monkeypatch.setattr(remote, "unpack_mic_audio", recording_unpack)
    addon = LoopbackAddon(answers_pings=True, floods=400)
    loop.call_soon(count_passes)
    async with linked(addon) as client:
        await wait_until(lambda: len(handled_at) == 400)
        assert client.linked
    longest = max(len(list(run)) for _, run in itertools.groupby(handled_at))
    assert longest <= remote.LINK_RECEIVE_SLICE
