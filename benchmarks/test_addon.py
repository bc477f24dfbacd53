"""The hub with the add-on serving the devices, in its own process: what the relay costs.

    XIAOZHI_BENCH_QUICK=1 scripts/env python -m pytest benchmarks/test_addon.py -s

The same scenarios as `test_hub.py` (its `hub_overhead` and `load`), with every device talking to
the add-on's ports: decoding, reply pacing and encoding run in the add-on's process, HA gets PCM
and sends replies over the link. It runs when XIAOZHI_BENCH_ONLY is unset or names `addon`;
XIAOZHI_BENCH_DEVICES sets the load's device counts; XIAOZHI_BENCH_JSON=path writes the numbers
as JSON.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
import json
import os
from pathlib import Path
from typing import Any

from homeassistant.core import HomeAssistant
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.xiaozhi.const import CONF_ADDON_URL, CONF_LINK_SECRET, DOMAIN
from tests.addon import addon_command, free_port
from tests.conftest import allow_a_fleet
from tests.providers import Providers
from tools.emulator import DeviceEmulator

from .hub import FULL, QUICK, HubBench, _load, hub_overhead
from .report import format_goals, format_table

SECRET = "bench-link-secret"
START_TIMEOUT_S = 30.0


@pytest.fixture
async def addon_ports(socket_enabled: None, tmp_path: Path) -> AsyncIterator[tuple[int, int]]:
    """The add-on's program in a child process, on loopback ports (HTTP, WebSocket)."""
    http_port, websocket_port = free_port(), free_port()
    root = Path(__file__).resolve().parent.parent
    process = await asyncio.create_subprocess_exec(
        *addon_command(
            "benchmarks.addon_process", tmp_path, SECRET, http_port, websocket_port, "warning"
        ),
        cwd=root,
    )
    try:
        async with asyncio.timeout(START_TIMEOUT_S):
            while True:
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", http_port)
                except OSError:
                    await asyncio.sleep(0.1)
                    continue
                writer.close()
                break
        yield http_port, websocket_port
    finally:
        process.terminate()
        await process.wait()


@pytest.mark.timeout(900)
async def test_addon_benchmarks(
    hass: HomeAssistant,
    ha_core: None,
    providers: Providers,
    addon_ports: tuple[int, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """hub_overhead and load with the add-on; print the table."""
    if (only := os.environ.get("XIAOZHI_BENCH_ONLY")) and "addon" not in only.split(","):
        pytest.skip("'addon' is not in XIAOZHI_BENCH_ONLY")
    allow_a_fleet(monkeypatch)
    base = f"http://127.0.0.1:{addon_ports[0]}"
    entry = MockConfigEntry(
        domain=DOMAIN,
        title="Xiaozhi",
        data={CONF_ADDON_URL: base, CONF_LINK_SECRET: SECRET},
        options={"auth_mode": "local_network"},
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    hub = entry.runtime_data
    async with asyncio.timeout(START_TIMEOUT_S):
        while hub.link is None or not hub.link.linked:  # noqa: ASYNC110 - the link has no event
            await asyncio.sleep(0.05)
    ota_url = f"{base}/xiaozhi/ota/"
    devices: list[DeviceEmulator] = []

    async def make_device(**kwargs: Any) -> DeviceEmulator:
        kwargs.setdefault("relisten", False)
        device = DeviceEmulator(ota_url, **kwargs)
        devices.append(device)
        await device.check_ota()  # bound without a code (local network)
        return device

    factory: Callable[..., Coroutine[Any, Any, DeviceEmulator]] = make_device
    sizes = QUICK if os.environ.get("XIAOZHI_BENCH_QUICK") else FULL
    counts = sizes.load_counts
    if env_counts := os.environ.get("XIAOZHI_BENCH_DEVICES"):
        counts = [int(count) for count in env_counts.split(",")]
    hass.loop.set_debug(False)  # as in test_hub.py: production HA runs without it
    bench = HubBench(hass, providers, factory, ota_url)
    results = {
        "hub_overhead": await hub_overhead(bench, sizes.overhead_turns),
        "load": await _load(bench, counts, sizes.load_seconds),
    }
    for device in devices:
        await device.close()
    print("\n== with the add-on (devices on its ports, HA linked to it)\n" + format_table(results))
    print("\n" + format_goals(results, side_by_side=False))
    if path := os.environ.get("XIAOZHI_BENCH_JSON"):
        Path(path).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    assert await hass.config_entries.async_unload(entry.entry_id)
