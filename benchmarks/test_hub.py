"""The hub benchmarks at full size: `scripts/bench` runs this and prints the table.

    scripts/env python -m pytest benchmarks/test_hub.py -s -p no:cacheprovider

XIAOZHI_BENCH_JSON=path also writes every number as JSON.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from homeassistant.core import HomeAssistant
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from tests.conftest import allow_a_fleet, make_hub_entry
from tests.providers import Providers

from .hub import FULL, HubBench, run_all
from .report import format_table


@pytest.fixture
def hub_entry(monkeypatch: pytest.MonkeyPatch) -> MockConfigEntry:
    """Devices in another process join without a code."""
    allow_a_fleet(monkeypatch)
    return make_hub_entry(auth_mode="local_network", mqtt_port=0, udp_port=0)


@pytest.mark.timeout(900)
async def test_hub_benchmarks(
    hass: HomeAssistant, providers: Providers, make_device: Any, ota_url: str
) -> None:
    """Run every scenario; print the table."""
    results = await run_all(HubBench(hass, providers, make_device, ota_url), FULL)
    print("\n" + format_table(results))
    if path := os.environ.get("XIAOZHI_BENCH_JSON"):
        Path(path).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
