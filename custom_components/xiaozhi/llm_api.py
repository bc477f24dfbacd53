"""The "Xiaozhi device" LLM API: the speaking device's own MCP tools, for any agent.

An agent with this API enabled gets, for each request, the tools of the xiaozhi device that
made it (the pipeline passes the satellite's device id): volume, screen, camera, and whatever
the board adds (LED strips, servos), with their JSON schemas. User-only tools (reboot, firmware
upgrade) are never offered. The firmware's tool names have dots, which OpenAI-style function
names do not allow: they are offered with underscores and mapped back.
"""

from __future__ import annotations

import re
from typing import Any, Final

from homeassistant.core import CALLBACK_TYPE, HomeAssistant, callback
from homeassistant.helpers import device_registry as dr, llm
import probatio

from .const import DOMAIN, LLM_API_ID, LLM_API_NAME
from .core.mcp import DeviceTool, parse_json_text
from .device_tools import STATUS_TOOL, DeviceTools
from .hub import async_get_hub

MAX_TOOL_NAME_CHARS: Final = 64  # OpenAI's limit for function names
TOOL_NAME_INVALID: Final = re.compile(r"[^A-Za-z0-9_-]")
PROMPT: Final = (
    'You are speaking through the xiaozhi device "{name}". Its own tools act on that device '
    "(its speaker, screen, camera and whatever else it has); use them when the user asks the "
    "device to do something to itself."
)
NO_DEVICE_PROMPT: Final = (
    "This conversation does not come from a connected xiaozhi device; its tools are unavailable."
)
VALIDATORS: Final[dict[str, Any]] = {
    "integer": probatio.Coerce(int),
    "number": probatio.Coerce(float),
    "string": str,
    "boolean": bool,
}


def llm_tool_name(name: str, taken: set[str]) -> str:
    """A function name an LLM accepts (`self.audio_speaker.set_volume` -> `self_audio_...`)."""
    base = TOOL_NAME_INVALID.sub("_", name)[:MAX_TOOL_NAME_CHARS] or "tool"
    candidate, number = base, 2
    while candidate in taken:
        suffix = f"_{number}"
        candidate = base[: MAX_TOOL_NAME_CHARS - len(suffix)] + suffix
        number += 1
    return candidate


def parameters(tool: DeviceTool) -> probatio.Schema:
    """The tool's arguments as a schema (types, defaults and ranges the firmware declares)."""
    fields: dict[Any, Any] = {}
    required = set(tool.required)
    for name, spec in tool.properties.items():
        validator = VALIDATORS.get(str(spec.get("type")), object)
        bounds = {
            k: spec[k] for k in ("minimum", "maximum") if isinstance(spec.get(k), int | float)
        }
        if bounds and validator is VALIDATORS["integer"]:
            validator = probatio.All(
                validator, probatio.Range(min=bounds.get("minimum"), max=bounds.get("maximum"))
            )
        description = spec.get("description")
        extra: dict[str, Any] = {"description": description} if isinstance(description, str) else {}
        if name in required:
            key: Any = probatio.Required(name, **extra)
        elif "default" in spec:
            key = probatio.Optional(name, default=spec["default"], **extra)
        else:
            key = probatio.Optional(name, **extra)
        fields[key] = validator
    return probatio.Schema(fields)


class DeviceLlmTool(llm.Tool):
    """One MCP tool of the speaking device."""

    integration = DOMAIN

    def __init__(self, tools: DeviceTools, tool: DeviceTool, name: str) -> None:
        """Offer `tool` under `name`."""
        self.tools = tools
        self.device_tool = tool
        self.name = name
        self.description = tool.description or tool.name
        self.parameters = parameters(tool)
        self.annotations = llm.ToolAnnotations(
            read_only=tool.name == STATUS_TOOL, destructive=False, open_world=False
        )

    async def async_call(
        self, hass: HomeAssistant, tool_input: llm.ToolInput, llm_context: llm.LLMContext
    ) -> llm.ToolResult:
        """Call the tool on the device; its text comes back (as JSON where it is JSON)."""
        arguments = self.parameters(tool_input.tool_args)
        text = await self.tools.async_call(self.device_tool.name, arguments)
        return llm.ToolResult({"result": parse_json_text(text)})


class DeviceToolsAPI(llm.API):
    """Tools of the xiaozhi device a request comes from."""

    async def async_get_api_instance(self, llm_context: llm.LLMContext) -> llm.APIInstance:
        """The tools of the requesting device, if it is a connected xiaozhi."""
        tools = self._device_tools(llm_context.device_id)
        if tools is None or not tools.connected:
            return llm.APIInstance(self, NO_DEVICE_PROMPT, llm_context, [])
        taken: set[str] = set()
        offered: list[llm.Tool] = []
        for tool in tools.tools.values():
            if tool.user_only:
                continue
            name = llm_tool_name(tool.name, taken)
            taken.add(name)
            offered.append(DeviceLlmTool(tools, tool, name))
        prompt = PROMPT.format(name=tools.device.name)
        return llm.APIInstance(self, prompt, llm_context, offered)

    def _device_tools(self, device_id: str | None) -> DeviceTools | None:
        hub = async_get_hub(self.hass)
        entry = dr.async_get(self.hass).async_get(device_id) if device_id else None
        if hub is None or entry is None:
            return None
        for domain, key in entry.identifiers:
            if domain == DOMAIN and (device := hub.devices.get(key)) is not None:
                return hub.device_tools(device)
        return None


@callback
def async_register_api(hass: HomeAssistant) -> CALLBACK_TYPE:
    """Register the API; return its unregister callback."""
    return llm.async_register_api(hass, DeviceToolsAPI(hass=hass, id=LLM_API_ID, name=LLM_API_NAME))
