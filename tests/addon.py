"""The add-on host on loopback ports, for tests that link HA to it (its code, not a copy)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
import json
from pathlib import Path
import socket
import sys
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "addon"))

from xiaozhi_addon.host import AddonHost, AddonOptions

SECRET = "test-link-secret"
SILENCE_FRAME = b"\0" * 1920


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(name="addon")
async def addon_fixture(socket_enabled: None) -> AsyncIterator[AddonHost]:
    """The add-on's servers on loopback ports."""
    host = AddonHost(
        AddonOptions("debug", SECRET),
        listen_host="127.0.0.1",
        http_port=free_port(),
        websocket_port=free_port(),
        mqtt_port=0,  # any free ones
        udp_port=0,
    )
    await host.start()
    yield host
    await host.stop()


def addon_command(
    module: str, work: Path, secret: str, http_port: int, websocket_port: int, log_level: str
) -> list[str]:
    """The command that runs the add-on's program (`module`) on loopback ports, its options and
    data in `work`; MQTT and UDP on any free ports."""
    options = work / "options.json"
    options.write_text(json.dumps({"log_level": log_level, "link_secret": secret}))
    return [
        sys.executable,
        "-m",
        module,
        "--options",
        str(options),
        "--data",
        str(work / "addon-data"),
        "--host",
        "127.0.0.1",
        "--http-port",
        str(http_port),
        "--websocket-port",
        str(websocket_port),
        "--mqtt-port",
        "0",
        "--udp-port",
        "0",
    ]


def addon_url(addon: AddonHost) -> str:
    return f"http://127.0.0.1:{addon.http_port}"


async def wait_until(condition: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - state of two servers, no event to wait on
            await asyncio.sleep(0.02)
