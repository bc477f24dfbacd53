"""The hub beside the reference server: `scripts/bench` runs this when it started that server.

    eval "$(python3 benchmarks/reference_server.py start)"   # on the host
    export XIAOZHI_REFERENCE_URL XIAOZHI_REFERENCE_LLM_PORT XIAOZHI_REFERENCE_MEDIA_PORT
    scripts/env python -m pytest benchmarks/test_reference.py -s -p no:cacheprovider
    python3 benchmarks/reference_server.py stop

The reference server's LLM and ASR/TTS fakes are served here on the ports it was configured
with; XIAOZHI_REFERENCE_TURNS sets the turns per server (30); XIAOZHI_BENCH_JSON=path writes
the numbers as JSON.
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
from tests.llm_server import LlmServer, async_start as async_start_llm
from tests.providers import Providers

from .hub import HubBench
from .reference import side_by_side
from .reference_fakes import MediaFakes, async_start as async_start_media
from .report import format_reference

TURNS = 30


@pytest.fixture
def hub_entry(monkeypatch: pytest.MonkeyPatch) -> MockConfigEntry:
    """Devices join without a code."""
    allow_a_fleet(monkeypatch)
    return make_hub_entry(auth_mode="local_network", mqtt_port=0, udp_port=0)


@pytest.mark.timeout(900)
async def test_reference_side_by_side(
    hass: HomeAssistant, providers: Providers, make_device: Any, ota_url: str
) -> None:
    """Interleaved turns on both servers; print the comparison."""
    url = os.environ.get("XIAOZHI_REFERENCE_URL")
    if not url:
        pytest.skip("XIAOZHI_REFERENCE_URL is not set (benchmarks/reference_server.py start)")
    llm, media = LlmServer(), MediaFakes()
    runners = [
        await async_start_llm(llm, int(os.environ["XIAOZHI_REFERENCE_LLM_PORT"])),
        await async_start_media(media, int(os.environ["XIAOZHI_REFERENCE_MEDIA_PORT"])),
    ]
    try:
        turns = int(os.environ.get("XIAOZHI_REFERENCE_TURNS", TURNS))
        bench = HubBench(hass, providers, make_device, ota_url)
        results = await side_by_side(bench, url, llm, turns)
    finally:
        for runner in runners:
            await runner.cleanup()
    assert len(media.transcribed) == turns  # the reference server really heard each command
    print("\n" + format_reference(results))
    if path := os.environ.get("XIAOZHI_BENCH_JSON"):
        Path(path).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
