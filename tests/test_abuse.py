"""Abuse: many devices dropping mid-handshake and mid-reply leave nothing behind."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
import gc
import resource
from typing import Any

from homeassistant.core import HomeAssistant
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.xiaozhi.const import DOMAIN
from scripts.abuse import abuse
from tools.emulator import DeviceEmulator

from .conftest import make_hub_entry
from .providers import Providers

type MakeDevice = Callable[..., Coroutine[Any, Any, DeviceEmulator]]

HANDSHAKE_DROPS = 1000
REPLY_DROPS = 30
MAX_RSS_GROWTH_MIB = 40


@pytest.fixture
def hub_entry(providers: Providers) -> MockConfigEntry:
    return make_hub_entry()


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def settle(hass: HomeAssistant) -> set[asyncio.Task[object]]:
    """Let the hub notice the drops; return the tasks still running."""
    hub = hass.config_entries.async_entries(DOMAIN)[0].runtime_data
    for _ in range(200):
        if not hub.sessions:
            break
        await asyncio.sleep(0.02)
    await hass.async_block_till_done()
    gc.collect()
    return {t for t in asyncio.all_tasks() if not t.done()}


async def test_drops_leave_no_tasks_and_bounded_memory(
    hass: HomeAssistant, providers: Providers, ota_url: str, make_device: MakeDevice
) -> None:
    bound = await make_device()
    await bound.close()
    warm = await abuse(  # warm caches
        ota_url, bound.device_id, handshakes=20, replies=2, client_id=bound.client_id
    )
    assert warm.replies_missing == 0
    tasks_before = await settle(hass)
    rss_before = rss_mib()

    result = await abuse(
        ota_url,
        bound.device_id,
        handshakes=HANDSHAKE_DROPS,
        replies=REPLY_DROPS,
        client_id=bound.client_id,
    )

    tasks_after = await settle(hass)
    growth = rss_mib() - rss_before
    print(
        f"abuse: {result}; tasks {len(tasks_before)} -> {len(tasks_after)}; "
        f"peak RSS +{growth:.1f} MiB"
    )
    assert result.handshake_drops == HANDSHAKE_DROPS
    assert result.reply_drops == REPLY_DROPS
    assert result.replies_missing == 0  # every reply started before the plug was pulled
    assert len(tasks_after) <= len(tasks_before)
    assert not [t for t in tasks_after if t.get_name().startswith("xiaozhi")]
    assert hass.config_entries.async_entries(DOMAIN)[0].runtime_data.sessions == set()
    assert growth < MAX_RSS_GROWTH_MIB
