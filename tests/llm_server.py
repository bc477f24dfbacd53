"""A scriptable OpenAI-compatible chat service on loopback, for the real `openai` client.

Each request takes the next scripted reply: a streamed answer (text and tool-call deltas, with
pauses), an HTTP error, a stall, or a malformed stream. Unscripted requests get a short answer.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
import json
from typing import Any

from aiohttp import web

API_KEY = "sk-test"
MODEL = "test-model"
DEFAULT_ANSWER = "Hello."
ARGUMENT_PIECES = 3  # a tool call's arguments arrive split in this many deltas


@dataclass(frozen=True)
class Text:
    """Stream some text after a pause."""

    text: str
    delay_s: float = 0.0


@dataclass(frozen=True)
class Tool:
    """Stream a tool call: id and name first, then the arguments in pieces."""

    name: str
    arguments: dict[str, Any]
    id: str = "call_1"


@dataclass(frozen=True)
class Stream:
    """A streamed answer."""

    parts: Sequence[Text | Tool]


@dataclass(frozen=True)
class Error:
    """An HTTP error with an OpenAI-style body."""

    status: int
    message: str = "error"
    code: str | None = None


@dataclass(frozen=True)
class Stall:
    """Accept the request and never answer."""


@dataclass(frozen=True)
class Malformed:
    """A 200 event stream whose data is not JSON."""

    body: str = 'data: {"id": "x", "choices": [{"delta": {"content": "Hi"\n\n'


type Reply = Stream | Error | Stall | Malformed


@dataclass
class LlmServer:
    """The running service: script its replies, read what it was asked."""

    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    replies: deque[Reply] = field(default_factory=deque)
    last_token_at: float | None = None  # loop time the last streamed text was sent
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def script(self, *replies: Reply) -> None:
        """Queue replies for the next requests."""
        self.replies.extend(replies)

    def system_prompt(self, index: int = -1) -> str:
        """The system prompt of a request."""
        message = self.requests[index]["messages"][0]
        assert message["role"] == "system"
        return str(message["content"])

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {API_KEY}":
            return _error(Error(401, "Incorrect API key provided", "invalid_api_key"))
        body = await request.json()
        self.requests.append(body)
        reply = self.replies.popleft() if self.replies else Stream([Text(DEFAULT_ANSWER)])
        match reply:
            case Error():
                return _error(reply)
            case Stall():
                await self.released.wait()
                return web.Response(status=503)
            case Malformed(body=text):
                return web.Response(text=text, content_type="text/event-stream")
        return await self._stream(request, reply, body["model"])

    async def _stream(self, request: web.Request, reply: Stream, model: str) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)

        async def send(delta: dict[str, Any], finish: str | None = None) -> None:
            chunk = {
                "id": "chatcmpl-test",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())

        await send({"role": "assistant", "content": ""})
        finish = "stop"
        tool_index = 0
        for part in reply.parts:
            if isinstance(part, Text):
                if part.delay_s:
                    await asyncio.sleep(part.delay_s)
                await send({"content": part.text})
                self.last_token_at = asyncio.get_running_loop().time()
                continue
            finish = "tool_calls"
            call = {"index": tool_index, "id": part.id, "type": "function"}
            await send({"tool_calls": [{**call, "function": {"name": part.name, "arguments": ""}}]})
            arguments = json.dumps(part.arguments)
            size = -(-len(arguments) // ARGUMENT_PIECES)
            for start in range(0, len(arguments), size):
                piece = arguments[start : start + size]
                await send(
                    {"tool_calls": [{"index": tool_index, "function": {"arguments": piece}}]}
                )
            tool_index += 1
        await send({}, finish)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "test"}]}
        )


def _error(error: Error) -> web.Response:
    body = {"error": {"message": error.message, "type": "error", "code": error.code}}
    return web.json_response(body, status=error.status)


async def async_start(server: LlmServer, port: int = 0) -> web.AppRunner:
    """Serve on 127.0.0.1 (a free port by default); sets `server.url` to the API's base URL."""
    app = web.Application()
    app.router.add_post("/v1/chat/completions", server._chat)
    app.router.add_get("/v1/models", server._models)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    port = runner.addresses[0][1]
    server.url = f"http://127.0.0.1:{port}/v1"
    return runner
