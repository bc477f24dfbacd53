"""A loopback xiaozhi "MCP endpoint": HA connects to it; the test drives an MCP client over it.

Like the real endpoints, it is the MCP *client*: for each connection HA opens, it runs the
`mcp` SDK's `ClientSession` over the socket (initialize, then whatever the test asks).
"""

from __future__ import annotations

import asyncio
from contextlib import suppress
import json
from typing import Any

from aiohttp import WSMsgType, web
import anyio
from mcp import ClientSession, types
from mcp.shared.message import SessionMessage

TOKEN = "endpoint-secret-token"


class EndpointConnection:
    """One connection HA opened, with an initialized MCP client session on it."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.session: ClientSession
        self.ready = asyncio.Event()
        self.sent: list[dict[str, Any]] = []  # every frame HA sent, parsed
        self._closed = asyncio.Event()

    async def serve(self) -> None:
        """Run the client session until the socket closes or the test drops it."""
        to_client, client_in = anyio.create_memory_object_stream[SessionMessage | Exception](32)
        client_out, from_client = anyio.create_memory_object_stream[SessionMessage](32)

        async def read() -> None:
            async with to_client:
                async for frame in self.ws:
                    if frame.type is WSMsgType.TEXT:
                        self.sent.append(json.loads(frame.data))
                        message = types.JSONRPCMessage.model_validate_json(frame.data)
                        await to_client.send(SessionMessage(message))
            self._closed.set()

        async def write() -> None:
            async with from_client:
                async for message in from_client:
                    text = message.message.model_dump_json(by_alias=True, exclude_none=True)
                    await self.ws.send_str(text)

        tasks = [asyncio.create_task(read()), asyncio.create_task(write())]
        try:
            async with ClientSession(client_in, client_out) as session:
                self.session = session
                await session.initialize()
                self.ready.set()
                await self._closed.wait()
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with suppress(asyncio.CancelledError, Exception):
                    await task

    async def drop(self) -> None:
        """Close the socket from the endpoint's side (as a cloud restart does)."""
        self._closed.set()
        await self.ws.close()

    @property
    def closed(self) -> bool:
        """Whether the socket is closed."""
        return self.ws.closed


class LoopbackEndpoint:
    """The endpoint server; `refuse_status` answers the handshake with that HTTP status."""

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.refuse_status: int | None = None
        self.close_code_on_connect: int | None = None  # accept, then close with this code
        self.attempts = 0  # handshakes, refused ones included
        self.connections: asyncio.Queue[EndpointConnection] = asyncio.Queue()
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._open: set[EndpointConnection] = set()

    async def start(self) -> LoopbackEndpoint:
        """Listen on a free loopback port."""
        app = web.Application()
        app.router.add_get("/mcp/", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"ws://127.0.0.1:{port}/mcp/?token={self.token}"
        return self

    async def close(self) -> None:
        """Close every connection and stop listening."""
        for connection in list(self._open):
            await connection.drop()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.attempts += 1
        if self.refuse_status is not None or request.query.get("token") != self.token:
            return web.Response(status=self.refuse_status or 401)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        if self.close_code_on_connect is not None:
            await ws.close(code=self.close_code_on_connect)
            return ws
        connection = EndpointConnection(ws)
        await self.connections.put(connection)
        self._open.add(connection)
        try:
            await connection.serve()
        finally:
            self._open.discard(connection)
        return ws

    async def next_connection(self, timeout: float = 10) -> EndpointConnection:
        """The next connection HA opens, once its MCP session is initialized."""
        async with asyncio.timeout(timeout):
            connection = await self.connections.get()
            await connection.ready.wait()
        return connection
