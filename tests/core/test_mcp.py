"""The MCP client against the firmware's quirks, without a network."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
import logging
from typing import Any

import pytest

from custom_components.xiaozhi.core import mcp
from custom_components.xiaozhi.core.mcp import (
    DeviceGoneError,
    McpClient,
    McpTimeoutError,
    ToolCallError,
)
from tools.mcp_server import DeviceMcpServer


class Wire:
    """Connects a client to an emulated device's MCP server in memory."""

    def __init__(self, server: DeviceMcpServer) -> None:
        self.server = server
        self.client = McpClient(self.send, "test")
        self.sent: list[dict[str, Any]] = []
        self.tasks: set[asyncio.Task[None]] = set()

    async def send(self, payload: dict[str, Any]) -> None:
        self.sent.append(payload)

        async def answer() -> None:
            if (response := await self.server.handle(payload)) is not None:
                self.client.handle(response)

        self.tasks.add(asyncio.get_running_loop().create_task(answer()))


@pytest.fixture
async def wire() -> AsyncIterator[Wire]:
    wire = Wire(DeviceMcpServer("aa:bb:cc:dd:ee:ff", "client", page_bytes=700))
    yield wire
    for task in wire.tasks:
        task.cancel()
    await asyncio.gather(*wire.tasks, return_exceptions=True)


async def test_pages_follow_the_tool_name_cursor(wire: Wire) -> None:
    tools = await wire.client.list_tools()
    assert [t.name for t in tools] == [t.name for t in wire.server.tools]
    pages = [p for p in wire.sent if p["method"] == "tools/list"]
    assert len(pages) >= 3
    assert [p["id"] for p in wire.sent] == list(range(1, len(wire.sent) + 1))
    assert {t.name for t in tools if t.user_only} == {"self.get_system_info", "self.reboot"}


async def test_errors_without_code_and_timeouts(
    wire: Wire, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ToolCallError, match=r"Unknown tool: self\.nope"):
        await wire.client.call_tool("self.nope")
    with pytest.raises(ToolCallError, match="Value exceeds maximum allowed: 100"):
        await wire.client.call_tool("self.audio_speaker.set_volume", {"volume": 300})
    assert await wire.client.call_tool("self.audio_speaker.set_volume", {"volume": 9}) == "true"

    monkeypatch.setattr(mcp, "REQUEST_TIMEOUT_S", 0.05)
    wire.server.delay["self.reboot"] = 0.2
    with pytest.raises(McpTimeoutError):
        await wire.client.call_tool("self.reboot")
    await asyncio.sleep(0.3)  # the late answer is dropped, not mistaken for another request
    assert wire.server.rebooted == 1


async def test_close_fails_waiting_calls_and_later_ones(wire: Wire) -> None:
    wire.server.delay["self.reboot"] = 10
    call = asyncio.ensure_future(wire.client.call_tool("self.reboot"))
    await asyncio.sleep(0.01)
    wire.client.close()
    with pytest.raises(DeviceGoneError):
        await call
    with pytest.raises(DeviceGoneError):
        await wire.client.call_tool("self.reboot")


async def test_bad_answers_are_warned_of_once(wire: Wire, caplog: pytest.LogCaptureFixture) -> None:
    """A device repeating bad input (an always-connected one can, any time) is logged once."""
    caplog.set_level(logging.DEBUG, mcp.__name__)
    for _ in range(5):
        wire.client.handle({"jsonrpc": "2.0", "id": "7", "result": {}})
        wire.client.handle({"jsonrpc": "2.0", "id": 999, "result": {}})
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings
    assert len([r for r in caplog.records if r.levelno == logging.DEBUG]) == 8
    assert await wire.client.call_tool("self.audio_speaker.set_volume", {"volume": 9}) == "true"


async def test_a_cursor_that_repeats_ends_the_listing() -> None:
    """A device whose cursor never advances is not asked forever."""
    sent: list[dict[str, Any]] = []

    async def send(payload: dict[str, Any]) -> None:
        sent.append(payload)
        page = {"tools": [{"name": "self.a", "description": ""}], "nextCursor": "self.a"}
        client.handle({"jsonrpc": "2.0", "id": payload["id"], "result": page})

    client = McpClient(send)
    assert [t.name for t in await client.list_tools()] == ["self.a"]
    assert len(sent) == 2
