"""The hub benchmarks at full size: `scripts/bench` runs this and prints the table.

    scripts/env python -m pytest benchmarks/test_hub.py -s -p no:cacheprovider

XIAOZHI_BENCH_JSON=path also writes every number as JSON; XIAOZHI_BENCH_ONLY=user_latency,load
runs only those scenarios; XIAOZHI_BENCH_DEVICES=100,200 sets the device counts of the load;
XIAOZHI_BENCH_QUICK=1 runs fewer turns; XIAOZHI_BENCH_PROFILE=1 prints where the time went
(cProfile).
"""

from __future__ import annotations

import cProfile
from dataclasses import replace
import json
import os
from pathlib import Path
import pstats
from typing import Any

from homeassistant.core import HomeAssistant
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from tests.conftest import allow_a_fleet, make_hub_entry
from tests.providers import Providers

from .hub import FULL, QUICK, SCENARIOS, HubBench, run_all
from .report import format_goals, format_table


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
    sizes = QUICK if os.environ.get("XIAOZHI_BENCH_QUICK") else FULL
    if counts := os.environ.get("XIAOZHI_BENCH_DEVICES"):
        sizes = replace(sizes, load_counts=[int(count) for count in counts.split(",")])
    only = os.environ.get("XIAOZHI_BENCH_ONLY", ",".join(SCENARIOS)).split(",")
    profile = cProfile.Profile() if os.environ.get("XIAOZHI_BENCH_PROFILE") else None
    if profile is not None:
        profile.enable()  # the event loop's thread only
    results = await run_all(HubBench(hass, providers, make_device, ota_url), sizes, only)
    if profile is not None:
        profile.disable()
        pstats.Stats(profile).sort_stats("tottime").print_stats(30)
    reference = Path(os.environ.get("XIAOZHI_BENCH_REFERENCE_JSON", "/nonexistent"))
    if reference.is_file():  # benchmarks/test_reference.py ran just before (scripts/bench)
        results["reference"] = json.loads(reference.read_text(encoding="utf-8"))
    print("\n" + format_table(results))
    print("\n" + format_goals(results))
    if path := os.environ.get("XIAOZHI_BENCH_JSON"):
        Path(path).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
