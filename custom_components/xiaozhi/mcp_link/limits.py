"""What an endpoint accepts: tool count, list size, names, descriptions and result size.

Neither the xiaozhi.me cloud nor the self-hosted xiaozhi-esp32-server publishes its limits;
these are chosen from what their users and code show (README, "MCP endpoint" section):
the self-hosted server hands each tool to an OpenAI-compatible LLM as a function (names must
match `^[a-zA-Z0-9_-]{1,64}$`), reads only the first text block of a result, and users of both
report failures once dozens of tools or long tool lists are offered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import json
import re
from typing import Any, Final

TOOL_NAME: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI-compatible function names
CUT_MARKER: Final = "\n…[cut by Home Assistant: {shown} of {total} characters shown]"
DESCRIPTION_CUT: Final = "…"

# What a fit went over (the Repairs issue names it).
OVER_TOOL_COUNT: Final = "tool_count"
OVER_LIST_SIZE: Final = "list_size"
OVER_TOOL_NAME: Final = "tool_name"


@dataclass(frozen=True, slots=True)
class EndpointLimits:
    """The limits one endpoint is served within."""

    max_tools: int = 24  # the self-hosted endpoint fails above about 25 tools
    max_tools_list_chars: int = 24_000  # the whole tools/list result, as JSON
    max_description_chars: int = 1_000  # per tool; longer ones are cut
    max_result_chars: int = 16_000  # per tools/call result; longer ones are cut with a marker


LIMITS: Final = EndpointLimits()


@dataclass(slots=True)
class ToolsFit:
    """A tools/list result made to fit, and what it took."""

    tools: list[dict[str, Any]]
    offered: int  # tools the LLM APIs offered
    dropped: list[str] = field(default_factory=list)  # names left out (count, size or name)
    cut_descriptions: list[str] = field(default_factory=list)
    over: set[str] = field(default_factory=set)  # OVER_* limits the selection went over

    @property
    def chars(self) -> int:
        """Size of the tool list as sent (JSON characters)."""
        return _json_chars(self.tools)


def _json_chars(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def fit_tools(tools: list[dict[str, Any]], limits: EndpointLimits = LIMITS) -> ToolsFit:
    """Keep the tools (in their order) that fit; cut long descriptions; name what did not fit."""
    fit = ToolsFit(tools=[], offered=len(tools))
    size = 2  # the list's brackets
    for offered in tools:
        tool = offered
        name = str(tool.get("name", ""))
        if not TOOL_NAME.match(name):
            fit.dropped.append(name)
            fit.over.add(OVER_TOOL_NAME)
            continue
        description = tool.get("description") or ""
        if len(description) > limits.max_description_chars:
            keep = limits.max_description_chars - len(DESCRIPTION_CUT)
            tool = {**tool, "description": description[:keep] + DESCRIPTION_CUT}
            fit.cut_descriptions.append(name)
        tool_chars = _json_chars(tool) + 1  # and its comma
        if len(fit.tools) >= limits.max_tools:
            fit.dropped.append(name)
            fit.over.add(OVER_TOOL_COUNT)
        elif size + tool_chars > limits.max_tools_list_chars:
            fit.dropped.append(name)
            fit.over.add(OVER_LIST_SIZE)
        else:
            fit.tools.append(tool)
            size += tool_chars
    return fit


def cut_call_result(result: dict[str, Any], max_chars: int = LIMITS.max_result_chars) -> bool:
    """Merge a tools/call result's text into one block, cut to `max_chars` with a marker.

    One block, because the self-hosted server reads only the first. Returns whether text was cut.
    """
    content = result.get("content")
    if not isinstance(content, list):
        return False
    texts = [b for b in content if isinstance(b, dict) and b.get("type") == "text"]
    if not texts:
        return False
    text = "".join(str(block.get("text", "")) for block in texts)
    cut = len(text) > max_chars
    if cut:
        marker = CUT_MARKER.format(shown="{shown}", total=len(text))
        shown = max_chars - len(marker.format(shown=max_chars))
        text = text[:shown] + marker.format(shown=shown) if shown > 0 else text[:max_chars]
    others = [b for b in content if b not in texts]
    result["content"] = [{"type": "text", "text": text}, *others]
    return cut
