"""HA serving MCP over a WebSocket it dials out to (a xiaozhi "MCP endpoint"). No HA imports.

`link.py` keeps one endpoint connected (backoff with jitter, keepalive, refused tokens) and
carries the `mcp` SDK's server streams over it; `limits.py` keeps what is sent within the
endpoint's limits.
"""

from .limits import LIMITS, EndpointLimits, ToolsFit, cut_call_result, fit_tools
from .link import Backoff, EndpointLink, LinkState, LinkStats, RefusedError, ServeFn

__all__ = [
    "LIMITS",
    "Backoff",
    "EndpointLimits",
    "EndpointLink",
    "LinkState",
    "LinkStats",
    "RefusedError",
    "ServeFn",
    "ToolsFit",
    "cut_call_result",
    "fit_tools",
]
