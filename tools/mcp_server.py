"""The emulated device's MCP server, as the firmware's `mcp_server.cc` behaves on the wire.

Common tools first (status, volume, brightness, theme, camera), then a board-specific LED strip,
user-only tools listed only `withUserTools`; pages cut under `page_bytes` with the next tool's
name as the cursor; numeric ids only; errors with a `message` and no `code`; arguments checked
like the firmware (integers truncated, ranges enforced). Tests can make a tool fail or stall.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
import json
from typing import Any, Final

import aiohttp

from custom_components.xiaozhi.core.messages import JsonObject

PAGE_BYTES: Final = 8000  # the firmware keeps a tools/list result under this many bytes
CAMERA_BOUNDARY: Final = "----ESP32_CAMERA_BOUNDARY"
VISION_TIMEOUT_S: Final = 30.0  # the firmware's HTTP response timeout
# A tiny JPEG (SOI, APP0, EOI): enough for tests that only move the bytes.
TEST_JPEG: Final = bytes.fromhex("ffd8ffe000104a46494600010100000100010000ffd9")

type Handler = Callable[[dict[str, Any]], Awaitable[Any]]


class ToolError(Exception):
    """A tool failed; its message goes to the client as the firmware sends it."""


@dataclass
class EmulatedTool:
    """One tool: its schema, and what it does."""

    name: str
    description: str
    properties: dict[str, JsonObject]
    handler: Handler
    user_only: bool = False

    def to_dict(self) -> JsonObject:
        """The tool object of a tools/list page."""
        schema: JsonObject = {"type": "object", "properties": self.properties}
        required = [k for k, v in self.properties.items() if "default" not in v]
        if required:
            schema["required"] = required
        data: JsonObject = {
            "name": self.name,
            "description": self.description,
            "inputSchema": schema,
        }
        if self.user_only:
            data["annotations"] = {"audience": ["user"]}
        return data


def _integer(minimum: int, maximum: int) -> JsonObject:
    return {"type": "integer", "minimum": minimum, "maximum": maximum}


@dataclass
class DeviceMcpServer:
    """The tools of one emulated board and the state they change."""

    device_id: str
    client_id: str
    camera: bool = True
    page_bytes: int = PAGE_BYTES
    volume: int = 70
    brightness: int = 80
    theme: str = "light"
    battery_level: int = 76
    charging: bool = False
    signal: str = "strong"
    temperature: float = 41.5
    led_color: tuple[int, int, int] = (0, 0, 0)
    photo: bytes = TEST_JPEG
    vision_url: str | None = None
    vision_token: str | None = None
    rebooted: int = 0
    fail: dict[str, str] = field(default_factory=dict)  # tool -> error message
    delay: dict[str, float] = field(default_factory=dict)  # tool -> seconds before answering
    calls: list[tuple[str, JsonObject]] = field(default_factory=list)  # (tool, arguments)
    requests: list[JsonObject] = field(default_factory=list)  # every request payload
    vision_answers: list[tuple[int, str]] = field(default_factory=list)  # (status, body)
    http: aiohttp.ClientSession | None = None
    tools: list[EmulatedTool] = field(init=False)

    def __post_init__(self) -> None:
        """The firmware's order: common tools, then the board's, then user-only ones."""
        self.tools = [
            EmulatedTool("self.get_device_status", "Device status.", {}, self._status),
            EmulatedTool(
                "self.audio_speaker.set_volume",
                "Set the volume of the audio speaker.",
                {"volume": _integer(0, 100)},
                self._set_volume,
            ),
            EmulatedTool(
                "self.screen.set_brightness",
                "Set the brightness of the screen.",
                {"brightness": _integer(0, 100)},
                self._set_brightness,
            ),
            EmulatedTool(
                "self.screen.set_theme",
                "Set the theme of the screen. The theme can be `light` or `dark`.",
                {"theme": {"type": "string"}},
                self._set_theme,
            ),
        ]
        if self.camera:
            self.tools.append(
                EmulatedTool(
                    "self.camera.take_photo",
                    "Take a photo and explain it.",
                    {"question": {"type": "string"}},
                    self._take_photo,
                )
            )
        self.tools += [
            EmulatedTool(
                "self.led_strip.set_color",
                "Set the color of the LED strip (board-specific).",
                {"red": _integer(0, 255), "green": _integer(0, 255), "blue": _integer(0, 255)},
                self._set_led,
            ),
            EmulatedTool("self.get_system_info", "System info.", {}, self._system_info, True),
            EmulatedTool("self.reboot", "Reboot the device.", {}, self._reboot, True),
        ]

    # --- JSON-RPC --------------------------------------------------------------------------------

    async def handle(self, payload: JsonObject) -> JsonObject | None:
        """Answer one request as the firmware would (None: it would not answer)."""
        method, request_id = payload.get("method"), payload.get("id")
        if payload.get("jsonrpc") != "2.0" or not isinstance(method, str):
            return None
        if method.startswith("notifications"):
            return None
        if not isinstance(request_id, int) or isinstance(request_id, bool):
            return None  # string ids are dropped without a reply
        self.requests.append(payload)
        params = payload.get("params") or {}
        try:
            if method == "initialize":
                result = self._initialize(params)
            elif method == "tools/list":
                result = self._list(params)
            elif method == "tools/call":
                result = await self._call(params)
            else:
                raise ToolError(f"Method not implemented: {method}")
        except ToolError as err:
            return {"jsonrpc": "2.0", "id": request_id, "error": {"message": str(err)}}
        return {"jsonrpc": "2.0", "id": request_id, "result": result}

    def _initialize(self, params: JsonObject) -> JsonObject:
        vision = (params.get("capabilities") or {}).get("vision")
        if self.camera and isinstance(vision, dict) and isinstance(vision.get("url"), str):
            self.vision_url = vision["url"]
            token = vision.get("token")
            self.vision_token = token if isinstance(token, str) else None
        return {
            "protocolVersion": "2024-11-05",
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "xiaozhi-emulator", "version": "2.0.3"},
        }

    def _list(self, params: JsonObject) -> JsonObject:
        cursor = params.get("cursor")
        with_user = params.get("withUserTools") is True
        listed: list[JsonObject] = []
        found = not isinstance(cursor, str)
        for tool in self.tools:
            if not found:
                if tool.name != cursor:
                    continue
                found = True
            if tool.user_only and not with_user:
                continue
            page = {"tools": [*listed, tool.to_dict()], "nextCursor": tool.name}
            if len(json.dumps(page)) >= self.page_bytes:
                if not listed:
                    raise ToolError(f"Failed to add tool {tool.name} because of payload size limit")
                return {"tools": listed, "nextCursor": tool.name}
            listed.append(tool.to_dict())
        return {"tools": listed}

    async def _call(self, params: JsonObject) -> JsonObject:
        name, arguments = params.get("name"), params.get("arguments") or {}
        tool = next((t for t in self.tools if t.name == name), None)
        if tool is None or not isinstance(arguments, dict):
            raise ToolError(f"Unknown tool: {name}")
        values = self._arguments(tool, arguments)
        self.calls.append((tool.name, values))
        if delay := self.delay.get(tool.name):
            await asyncio.sleep(delay)
        if message := self.fail.get(tool.name):
            raise ToolError(message)
        value = await tool.handler(values)
        text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        return {"content": [{"type": "text", "text": text}], "isError": False}

    @staticmethod
    def _arguments(tool: EmulatedTool, arguments: JsonObject) -> dict[str, Any]:
        """Take each declared argument of the right type, as `DoToolCall` does."""
        values: dict[str, Any] = {}
        for key, spec in tool.properties.items():
            value = arguments.get(key)
            kind = spec["type"]
            if kind == "integer" and isinstance(value, int | float) and not isinstance(value, bool):
                number = int(value)
                if "maximum" in spec and number > spec["maximum"]:
                    raise ToolError(f"Value exceeds maximum allowed: {spec['maximum']}")
                if "minimum" in spec and number < spec["minimum"]:
                    raise ToolError(f"Value is below minimum allowed: {spec['minimum']}")
                values[key] = number
            elif (kind == "string" and isinstance(value, str)) or (
                kind == "boolean" and isinstance(value, bool)
            ):
                values[key] = value
            elif "default" in spec:
                values[key] = spec["default"]
            else:
                raise ToolError(f"Missing valid argument: {key}")
        return values

    # --- the tools -------------------------------------------------------------------------------

    async def _status(self, _: dict[str, Any]) -> Any:
        return {
            "audio_speaker": {"volume": self.volume},
            "screen": {"brightness": self.brightness, "theme": self.theme},
            "battery": {"level": self.battery_level, "charging": self.charging},
            "network": {"type": "wifi", "ssid": "emulated", "signal": self.signal},
            "chip": {"temperature": self.temperature},
        }

    async def _set_volume(self, values: dict[str, Any]) -> Any:
        self.volume = values["volume"]
        return True

    async def _set_brightness(self, values: dict[str, Any]) -> Any:
        self.brightness = values["brightness"]
        return True

    async def _set_theme(self, values: dict[str, Any]) -> Any:
        if values["theme"] not in ("light", "dark"):
            return False
        self.theme = values["theme"]
        return True

    async def _set_led(self, values: dict[str, Any]) -> Any:
        self.led_color = (values["red"], values["green"], values["blue"])
        return True

    async def _system_info(self, _: dict[str, Any]) -> Any:
        return {"mac_address": self.device_id, "uuid": self.client_id}

    async def _reboot(self, _: dict[str, Any]) -> Any:
        self.rebooted += 1
        return True

    async def _take_photo(self, values: dict[str, Any]) -> Any:
        """Upload the photo and the question as the firmware's `Explain` does (§6)."""
        if not self.vision_url:
            raise ToolError("Image explain URL or token is not set")
        status, body = await self.upload_photo(values["question"])
        if status != 200:
            raise ToolError("Failed to upload photo")
        return body

    async def upload_photo(
        self, question: str, *, token: str | None = None, photo: bytes | None = None
    ) -> tuple[int, str]:
        """POST the chunked multipart body; return the status and the raw body."""
        assert self.vision_url is not None
        token = self.vision_token if token is None else token
        headers = {
            "Device-Id": self.device_id,
            "Client-Id": self.client_id,
            "Content-Type": f"multipart/form-data; boundary={CAMERA_BOUNDARY}",
            "Connection": "close",
        }
        if token:
            headers["Authorization"] = f"Bearer {token}"
        http = self.http or aiohttp.ClientSession()
        try:
            async with http.post(
                self.vision_url,
                data=_multipart(question, self.photo if photo is None else photo),
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=VISION_TIMEOUT_S),
            ) as response:
                answer = (response.status, await response.text())
        finally:
            if http is not self.http:
                await http.close()
        self.vision_answers.append(answer)
        return answer


async def _multipart(question: str, photo: bytes, chunk: int = 4096) -> Any:
    """The firmware's body, in pieces (aiohttp sends a generator chunked, no Content-Length)."""
    yield (
        f"--{CAMERA_BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="question"\r\n\r\n'
        f"{question}\r\n"
        f"--{CAMERA_BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="file"; filename="camera.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    for start in range(0, len(photo), chunk):
        yield photo[start : start + chunk]
    yield f"\r\n--{CAMERA_BOUNDARY}--\r\n".encode()
