"""The MCP client of a device's own tools (protocol.md §5), over its session's `mcp` messages.

The device is the MCP server. This is a small JSON-RPC client rather than the `mcp` SDK's
`ClientSession`, because the firmware differs from what the SDK accepts: its errors carry no
`code` (the SDK's message model rejects them), `initialize` must carry `capabilities.vision` (the
SDK builds its capabilities itself, without that member), and `tools/list` takes `withUserTools`
(the SDK's list parameters drop unknown keys). HA's own pin of the SDK also changes major
versions between releases (1.x in 2026.10, 2.x in 2026.11), which a manifest pin would fight.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
import json
import logging
from typing import Any, Final

from .errors import XiaozhiError
from .messages import JsonObject

_LOGGER = logging.getLogger(__name__)

PROTOCOL_VERSION: Final = "2024-11-05"
CLIENT_INFO: Final = {"name": "xiaozhi-home-assistant", "version": "1.0"}
REQUEST_TIMEOUT_S: Final = 10.0  # initialize, each tools/list page, most tool calls
CAMERA_TOOL: Final = "self.camera.take_photo"
CAMERA_TIMEOUT_S: Final = 35.0  # capture, upload and the vision answer (the device waits 30 s)
MAX_TOOLS: Final = 64  # a board lists a dozen or two; more is kept to the first 64
MAX_TOOL_PAGES: Final = 16  # pages are < 8000 bytes: 16 hold far more than 64 tools
MAX_PENDING_REQUESTS: Final = 8  # requests awaiting an answer on one channel
MAX_NAME_CHARS: Final = 128
MAX_DESCRIPTION_CHARS: Final = 2048
MAX_RESULT_CHARS: Final = 8000  # a tool result handed on (to entities, to an LLM), at most


class McpError(XiaozhiError):
    """A request to the device's MCP server failed."""


class ToolCallError(McpError):
    """The device answered with an error (its message only: the firmware sends no code)."""


class McpTimeoutError(McpError):
    """The device did not answer in time."""


class DeviceGoneError(McpError):
    """The channel closed before the device answered."""


@dataclass(frozen=True, slots=True)
class DeviceTool:
    """One tool the device offers, as `tools/list` describes it."""

    name: str
    description: str
    input_schema: JsonObject
    user_only: bool = False  # `annotations.audience == ["user"]`: never offered to an LLM

    @classmethod
    def from_dict(cls, data: Any) -> DeviceTool:
        """Read a tool object; raise `ValueError` if it is not one."""
        if not isinstance(data, dict):
            raise ValueError("tool is not an object")
        name, description = data.get("name"), data.get("description", "")
        if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_CHARS:
            raise ValueError(f"bad tool name {str(name)[:40]!r}")
        if not isinstance(description, str):
            raise ValueError(f"tool {name}: description is not a string")
        schema = data.get("inputSchema") or {"type": "object", "properties": {}}
        if not isinstance(schema, dict) or not isinstance(schema.get("properties", {}), dict):
            raise ValueError(f"tool {name}: inputSchema is not an object schema")
        annotations = data.get("annotations")
        audience = annotations.get("audience") if isinstance(annotations, dict) else None
        return cls(
            name=name,
            description=description[:MAX_DESCRIPTION_CHARS],
            input_schema=schema,
            user_only=audience == ["user"],
        )

    @property
    def properties(self) -> dict[str, JsonObject]:
        """The arguments, by name (only those described by an object)."""
        properties = self.input_schema.get("properties") or {}
        return {k: v for k, v in properties.items() if isinstance(v, dict)}

    @property
    def required(self) -> list[str]:
        """The names of the required arguments."""
        required = self.input_schema.get("required") or []
        return [name for name in required if isinstance(name, str)]


class McpClient:
    """Requests to one channel's MCP server, matched to their answers by numeric id."""

    def __init__(self, send: Callable[[JsonObject], Awaitable[None]], name: str = "") -> None:
        """Send JSON-RPC payloads with `send`; feed the device's with `handle`."""
        self._send = send
        self._name = name
        self._next_id = 1
        self._pending: dict[int, asyncio.Future[JsonObject]] = {}
        self._closed = False
        self._warned: set[str] = set()  # kinds of bad input already logged as warnings
        self.server_info: JsonObject = {}
        # Log records get this string, never the client: a kept record would keep the session.
        self._log_name = f"MCP {name}"

    def __repr__(self) -> str:
        """Name the device in logs."""
        return f"<McpClient {self._name}>"

    # --- answers from the device -----------------------------------------------------------------

    def handle(self, payload: JsonObject) -> None:
        """Take one JSON-RPC message from the device; bad ones are logged and dropped."""
        request_id = payload.get("id")
        if "method" in payload:  # the device never sends requests or notifications
            _LOGGER.debug(
                "%s: ignoring device request %s", self._log_name, str(payload.get("method"))[:40]
            )
            return
        if (
            payload.get("jsonrpc") != "2.0"
            or not isinstance(request_id, int)
            or isinstance(request_id, bool)
        ):
            self._warn_once("malformed", "dropping malformed MCP message (no JSON-RPC 2.0 id)")
            return
        future = self._pending.pop(request_id, None)
        if future is None:
            self._warn_once("unknown id", "dropping MCP answer to unknown id %s", request_id)
            return
        if future.done():
            return
        if "error" in payload:
            error = payload["error"]
            message = error.get("message") if isinstance(error, dict) else error
            future.set_exception(ToolCallError(str(message)[:MAX_RESULT_CHARS] or "error"))
        elif isinstance(result := payload.get("result"), dict):
            future.set_result(result)
        else:
            future.set_exception(McpError("answer without a result object"))

    def _warn_once(self, kind: str, message: str, *args: object) -> None:
        """Warn of a kind of bad input once per channel; later ones only at debug level."""
        level = logging.DEBUG if kind in self._warned else logging.WARNING
        self._warned.add(kind)
        _LOGGER.log(level, "%s: " + message, self._log_name, *args)

    def close(self) -> None:
        """The channel closed: every request still waiting fails at once."""
        self._closed = True
        for future in self._pending.values():
            if not future.done():
                future.set_exception(DeviceGoneError("the device disconnected"))
        self._pending.clear()

    # --- requests --------------------------------------------------------------------------------

    async def request(
        self, method: str, params: JsonObject | None = None, *, timeout: float | None = None
    ) -> JsonObject:
        """Send one request and return its result; raise an `McpError` subclass on failure."""
        if self._closed:
            raise DeviceGoneError("the device is not connected")
        if len(self._pending) >= MAX_PENDING_REQUESTS:
            raise McpError(f"more than {MAX_PENDING_REQUESTS} requests waiting for the device")
        request_id = self._next_id
        self._next_id += 1
        future: asyncio.Future[JsonObject] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        payload: JsonObject = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            payload["params"] = params
        try:
            await self._send(payload)
            async with asyncio.timeout(REQUEST_TIMEOUT_S if timeout is None else timeout):
                return await future
        except TimeoutError:
            raise McpTimeoutError(f"no answer to {method} in time") from None
        finally:
            self._pending.pop(request_id, None)

    async def initialize(self, vision_url: str | None, vision_token: str | None) -> JsonObject:
        """Say who we are, and where the camera uploads its photos (re-sent on every channel)."""
        capabilities: JsonObject = {}
        if vision_url:
            capabilities["vision"] = {"url": vision_url, "token": vision_token or ""}
        result = await self.request(
            "initialize",
            {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": capabilities,
                "clientInfo": CLIENT_INFO,
            },
        )
        info = result.get("serverInfo")
        self.server_info = info if isinstance(info, dict) else {}
        return result

    async def list_tools(self) -> list[DeviceTool]:
        """Every tool, user-only ones included, page by page (the cursor is a tool's name)."""
        tools: dict[str, DeviceTool] = {}
        cursor: str | None = None
        seen_cursors: set[str] = set()
        for _ in range(MAX_TOOL_PAGES):
            params: JsonObject = {"withUserTools": True}
            if cursor is not None:
                params["cursor"] = cursor
            result = await self.request("tools/list", params)
            page = result.get("tools")
            if not isinstance(page, list):
                raise McpError("tools/list answer without a tools list")
            for item in page:
                try:
                    tool = DeviceTool.from_dict(item)
                except ValueError as err:
                    _LOGGER.warning("%s: skipping a tool: %s", self._log_name, str(err))
                    continue
                if len(tools) >= MAX_TOOLS and tool.name not in tools:
                    _LOGGER.warning(
                        "%s: more than %d tools; the rest are ignored", self._log_name, MAX_TOOLS
                    )
                    return list(tools.values())
                tools[tool.name] = tool
            next_cursor = result.get("nextCursor")
            if not isinstance(next_cursor, str) or not next_cursor:
                return list(tools.values())
            if next_cursor in seen_cursors:
                _LOGGER.warning(
                    "%s: tools/list cursor %r repeats; stopping", self._log_name, next_cursor
                )
                return list(tools.values())
            seen_cursors.add(cursor := next_cursor)
        _LOGGER.warning(
            "%s: tools/list has more than %d pages; the rest are ignored",
            self._log_name,
            MAX_TOOL_PAGES,
        )
        return list(tools.values())

    async def call_tool(
        self, name: str, arguments: JsonObject | None = None, *, timeout: float | None = None
    ) -> str:
        """Call a tool; return its text (at most `MAX_RESULT_CHARS`)."""
        if timeout is None:
            timeout = CAMERA_TIMEOUT_S if name == CAMERA_TOOL else REQUEST_TIMEOUT_S
        result = await self.request(
            "tools/call", {"name": name, "arguments": arguments or {}}, timeout=timeout
        )
        return result_text(result)


def result_text(result: JsonObject) -> str:
    """The text of a `tools/call` result, bounded; raise `ToolCallError` for `isError` ones."""
    content = result.get("content")
    parts: list[str] = []
    for item in content if isinstance(content, list) else []:
        if not isinstance(item, dict):
            continue
        if isinstance(text := item.get("text"), str):
            parts.append(text)
        elif item.get("type") == "image":
            parts.append("[image]")
    text = "\n".join(parts)[:MAX_RESULT_CHARS]
    if result.get("isError") is True:
        raise ToolCallError(text or "the tool failed")
    return text


def parse_json_text(text: str) -> Any:
    """A tool's text as JSON if it is JSON (status, booleans, numbers), else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text
