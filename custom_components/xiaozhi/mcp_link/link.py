"""Keep one MCP endpoint connected and carry an MCP server's streams over its WebSocket.

The endpoint is the MCP *client*: it sends `initialize`, `tools/list`, `tools/call` and pings
as JSON-RPC text frames; the server (the `mcp` SDK's, run by `serve`) answers on the same
socket. After any drop or error the link reconnects with exponential backoff and jitter; a
refused token waits `REFUSED_RETRY_S` instead of retrying fast.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
import json
import logging
import random
from typing import Any, Final

import aiohttp
import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp import types
from mcp.shared.message import SessionMessage
from pydantic import ValidationError

from .limits import LIMITS, EndpointLimits, ToolsFit, cut_call_result, fit_tools

_LOGGER = logging.getLogger(__name__)

BACKOFF_BASE_S: Final = 1.0  # first retry after 0.5-1 s
BACKOFF_MAX_S: Final = 300.0  # retries never wait longer than this
STABLE_CONNECTION_S: Final = 60.0  # a connection this old resets the backoff
REFUSED_RETRY_S: Final = 3600.0  # a refused token is tried again this rarely
KEEPALIVE_S: Final = 30.0  # WebSocket ping interval; no pong within half of it drops the link
CONNECT_TIMEOUT_S: Final = 20.0  # TCP + TLS + WebSocket handshake
CLOSE_TIMEOUT_S: Final = 2.0  # waiting for the endpoint to confirm a close
MAX_MESSAGE_BYTES: Final = 1 << 20  # an endpoint's request larger than this drops the link
MAX_QUEUED_MESSAGES: Final = 32  # per direction, between the socket and the MCP server
MAX_TRACKED_REQUESTS: Final = 256  # tools/list and tools/call requests awaiting their answer
REFUSED_HTTP_STATUSES: Final = frozenset({401, 403})
REFUSED_CLOSE_CODES: Final = frozenset({1008})  # policy violation: the self-hosted bad token

type ServeFn = Callable[
    [MemoryObjectReceiveStream[SessionMessage | Exception], MemoryObjectSendStream[SessionMessage]],
    Coroutine[Any, Any, None],
]


class RefusedError(Exception):
    """The endpoint refused the token (HTTP 401/403, or closed before saying anything)."""


class LinkState(StrEnum):
    """Where the link is."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    WAITING = "waiting"  # to reconnect after a drop or error
    REFUSED = "refused"  # the token was refused; retried rarely
    STOPPED = "stopped"


@dataclass(slots=True)
class LinkStats:
    """What the link did (for the connectivity sensor and diagnostics)."""

    state: LinkState = LinkState.STOPPED
    connected_since: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    retry_in_s: float | None = None
    connections: int = 0
    calls: int = 0
    failed_calls: int = 0
    results_cut: int = 0
    tools_offered: int | None = None  # by the LLM APIs, at the last tools/list
    tools_served: int | None = None  # after the endpoint's limits
    tools_list_chars: int | None = None
    tools_dropped: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The stats as plain values."""
        return {
            "state": self.state.value,
            "connected_since": _iso(self.connected_since),
            "last_error": self.last_error,
            "last_error_at": _iso(self.last_error_at),
            "retry_in_s": self.retry_in_s,
            "connections": self.connections,
            "calls": self.calls,
            "failed_calls": self.failed_calls,
            "results_cut": self.results_cut,
            "tools_offered": self.tools_offered,
            "tools_served": self.tools_served,
            "tools_list_chars": self.tools_list_chars,
            "tools_dropped": list(self.tools_dropped),
        }


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


@dataclass(slots=True)
class Backoff:
    """Exponential backoff with jitter: attempt n waits between half and all of base * 2^n."""

    base_s: float
    max_s: float
    attempt: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next_delay(self) -> float:
        """Seconds to wait before the next attempt."""
        ceiling = min(self.max_s, self.base_s * 2 ** min(self.attempt, 30))
        self.attempt += 1
        return float(ceiling / 2 + self.rng.uniform(0, ceiling / 2))

    def reset(self) -> None:
        """Start again from the shortest wait."""
        self.attempt = 0


def _describe(err: BaseException) -> str:
    """An error in words, without the URL (it carries the token)."""
    if isinstance(err, aiohttp.WSServerHandshakeError):
        return f"HTTP {err.status} on connect"
    if isinstance(err, aiohttp.ClientConnectorError):
        return f"cannot connect to {err.host}:{err.port} ({err.os_error.strerror or err})"
    if isinstance(err, TimeoutError):
        return "timed out"
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


class EndpointLink:
    """One endpoint: connect, serve, reconnect; `run` until cancelled."""

    def __init__(
        self,
        url: str,
        serve: ServeFn,
        session: aiohttp.ClientSession,
        *,
        limits: EndpointLimits = LIMITS,
        on_change: Callable[[], None] = lambda: None,
        on_refused: Callable[[], None] = lambda: None,
        on_tools: Callable[[ToolsFit], None] = lambda fit: None,
        backoff: Backoff | None = None,
    ) -> None:
        """Prepare the link; nothing connects before `run`."""
        self._url = url
        self._serve = serve
        self._session = session
        self._limits = limits
        self._on_change = on_change
        self._on_refused = on_refused
        self._on_tools = on_tools
        self.backoff = backoff or Backoff(BACKOFF_BASE_S, BACKOFF_MAX_S)
        self.stats = LinkStats()
        self._requests: dict[types.RequestId, str] = {}

    @property
    def connected(self) -> bool:
        """Whether the endpoint's socket is open."""
        return self.stats.state is LinkState.CONNECTED

    def _set(self, state: LinkState, **changes: Any) -> None:
        self.stats.state = state
        for key, value in changes.items():
            setattr(self.stats, key, value)
        self._on_change()

    def _error(self, text: str) -> None:
        self.stats.last_error, self.stats.last_error_at = text, datetime.now(UTC)

    async def run(self) -> None:
        """Stay connected until cancelled; the socket is closed on the way out."""
        try:
            while True:
                opened = asyncio.get_running_loop().time()
                self._set(LinkState.CONNECTING, retry_in_s=None)
                try:
                    await self._connect_and_serve()
                    self._error("the endpoint closed the connection")
                except RefusedError as err:
                    self._error(str(err))
                    self.backoff.reset()
                    self._set(LinkState.REFUSED, connected_since=None, retry_in_s=REFUSED_RETRY_S)
                    _LOGGER.warning("MCP endpoint refused the token: %s", err)
                    self._on_refused()
                    await asyncio.sleep(REFUSED_RETRY_S)
                    continue
                except (aiohttp.ClientError, OSError, TimeoutError) as err:
                    self._error(_describe(err))
                if asyncio.get_running_loop().time() - opened >= STABLE_CONNECTION_S:
                    self.backoff.reset()
                delay = self.backoff.next_delay()
                _LOGGER.debug("MCP endpoint: %s; retrying in %.1f s", self.stats.last_error, delay)
                self._set(LinkState.WAITING, connected_since=None, retry_in_s=round(delay, 1))
                await asyncio.sleep(delay)
        finally:
            self._set(LinkState.STOPPED, connected_since=None, retry_in_s=None)

    async def _connect_and_serve(self) -> None:
        """One connection: returns when the endpoint closes it, raises on errors."""
        try:
            ws = await self._session.ws_connect(
                self._url,
                heartbeat=KEEPALIVE_S,
                timeout=aiohttp.ClientWSTimeout(ws_close=CLOSE_TIMEOUT_S),
                max_msg_size=MAX_MESSAGE_BYTES,
                autoclose=True,
                autoping=True,
            )
        except aiohttp.WSServerHandshakeError as err:
            if err.status in REFUSED_HTTP_STATUSES:
                raise RefusedError(_describe(err)) from err
            raise
        async with ws:
            self.stats.connections += 1
            self._requests.clear()
            self._set(LinkState.CONNECTED, connected_since=datetime.now(UTC))
            heard = await self._pump(ws)
            if ws.close_code in REFUSED_CLOSE_CODES and not heard:
                raise RefusedError(f"closed with code {ws.close_code} before any request")

    async def _pump(self, ws: aiohttp.ClientWebSocketResponse) -> bool:
        """Run the MCP server over the socket until either ends; return if a request came."""
        to_server, server_in = anyio.create_memory_object_stream[SessionMessage | Exception](
            MAX_QUEUED_MESSAGES
        )
        server_out, from_server = anyio.create_memory_object_stream[SessionMessage](
            MAX_QUEUED_MESSAGES
        )
        heard = asyncio.Event()
        tasks = [
            asyncio.create_task(self._read(ws, to_server, heard)),
            asyncio.create_task(self._write(ws, from_server)),
            asyncio.create_task(self._serve(server_in, server_out)),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if (err := task.exception()) is not None and not isinstance(
                    err, aiohttp.ClientError | OSError
                ):
                    _LOGGER.error("MCP endpoint link failed", exc_info=err)
                    self._error(_describe(err))
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with suppress(asyncio.CancelledError, Exception):
                    await task
            for stream in (to_server, server_in, server_out, from_server):
                stream.close()
        return heard.is_set()

    async def _read(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        to_server: MemoryObjectSendStream[SessionMessage | Exception],
        heard: asyncio.Event,
    ) -> None:
        async with to_server:
            async for frame in ws:
                if frame.type is not aiohttp.WSMsgType.TEXT:
                    continue  # binary frames mean nothing here; errors end the iteration
                try:
                    message = types.JSONRPCMessage.model_validate_json(frame.data)
                except ValidationError:
                    _LOGGER.debug("MCP endpoint sent a frame that is not JSON-RPC")
                    continue
                heard.set()
                self._track(message.root)
                await to_server.send(SessionMessage(message))

    def _track(self, message: Any) -> None:
        """Remember which requests' answers need fitting to the limits."""
        if isinstance(message, types.JSONRPCRequest) and message.method in (
            "tools/list",
            "tools/call",
        ):
            if len(self._requests) >= MAX_TRACKED_REQUESTS:
                self._requests.pop(next(iter(self._requests)))
            self._requests[message.id] = message.method
            if message.method == "tools/call":
                self.stats.calls += 1
                self._on_change()

    async def _write(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        from_server: MemoryObjectReceiveStream[SessionMessage],
    ) -> None:
        async with from_server:
            async for session_message in from_server:
                payload = session_message.message.model_dump(
                    by_alias=True, mode="json", exclude_none=True
                )
                self._fit(payload)
                await ws.send_str(json.dumps(payload, ensure_ascii=False))

    def _fit(self, payload: dict[str, Any]) -> None:
        """Fit a tools/list or tools/call answer to the endpoint's limits (in place)."""
        method = self._requests.pop(payload.get("id", ""), None) if "id" in payload else None
        result = payload.get("result")
        if method == "tools/call":
            if not isinstance(result, dict) or result.get("isError"):
                self.stats.failed_calls += 1
            if isinstance(result, dict) and cut_call_result(result, self._limits.max_result_chars):
                self.stats.results_cut += 1
            self._on_change()
        elif method == "tools/list" and isinstance(result, dict):
            fit = fit_tools(list(result.get("tools") or []), self._limits)
            result["tools"] = fit.tools
            self.stats.tools_offered, self.stats.tools_served = fit.offered, len(fit.tools)
            self.stats.tools_list_chars, self.stats.tools_dropped = fit.chars, fit.dropped
            self._on_tools(fit)
            self._on_change()
