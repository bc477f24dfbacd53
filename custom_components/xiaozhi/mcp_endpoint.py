"""MCP endpoints: HA dials out to a xiaozhi MCP endpoint and serves its LLM APIs there as tools.

The xiaozhi.me cloud and self-hosted xiaozhi servers give each agent an "MCP endpoint" (接入点),
a WebSocket URL with a token. Each endpoint subentry keeps one link to it (`mcp_link`), over
which HA's own MCP server (`mcp_server.server.create_server`, the one behind HA's `/api/mcp`)
serves the chosen LLM APIs: Assist by default, so exactly the entities exposed to Assist.
No access token: the server runs in process, in HA's event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import suppress
import logging
from typing import Any, Final

from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from homeassistant.components import conversation
from homeassistant.components.mcp_server.server import create_server
from homeassistant.config_entries import ConfigSubentry
from homeassistant.const import CONF_LLM_HASS_API, CONF_URL
from homeassistant.core import Context, HomeAssistant, callback
from homeassistant.helpers import issue_registry as ir, llm
from homeassistant.helpers.aiohttp_client import async_get_clientsession
from homeassistant.util.hass_dict import HassKey
from mcp.shared.message import SessionMessage

from .const import (
    DOMAIN,
    ISSUE_ENDPOINT_OVER_LIMIT,
    ISSUE_ENDPOINT_REFUSED,
    SUBENTRY_MCP_ENDPOINT,
    XIAOZHI_CONSOLE,
)
from .issues import async_raise_issue
from .mcp_link import LIMITS, EndpointLink, ToolsFit
from .models import XiaozhiConfigEntry

_LOGGER = logging.getLogger(__name__)

DATA_ENDPOINTS: HassKey[dict[str, EndpointLinks]] = HassKey(f"{DOMAIN}_mcp_endpoints")
MAX_NAMES_IN_ISSUE: Final = 10  # left-out tools named in the Repairs issue


def endpoint_apis(subentry: ConfigSubentry) -> list[str]:
    """The LLM APIs an endpoint serves (Assist unless chosen otherwise)."""
    return list(subentry.data.get(CONF_LLM_HASS_API) or [llm.LLM_API_ASSIST])


def _settings(subentry: ConfigSubentry) -> tuple[dict[str, Any], str]:
    return dict(subentry.data), subentry.title


class EndpointService:
    """One endpoint subentry: its link, and the repairs it raises."""

    def __init__(
        self, hass: HomeAssistant, entry: XiaozhiConfigEntry, subentry: ConfigSubentry
    ) -> None:
        """Prepare the link; `start` connects."""
        self.hass = hass
        self.entry = entry
        self.subentry = subentry
        self.settings = _settings(subentry)  # HA updates a subentry in place: keep what we used
        self._listeners: list[Callable[[], None]] = []
        self._task: asyncio.Task[None] | None = None
        self.link = EndpointLink(
            subentry.data[CONF_URL],
            self._async_serve,
            async_get_clientsession(hass),
            on_change=self._changed,
            on_refused=self._refused,
            on_tools=self._tools_listed,
        )

    @property
    def _refused_issue(self) -> str:
        return f"{ISSUE_ENDPOINT_REFUSED}_{self.subentry.subentry_id}"

    @property
    def _over_limit_issue(self) -> str:
        return f"{ISSUE_ENDPOINT_OVER_LIMIT}_{self.subentry.subentry_id}"

    @callback
    def start(self) -> None:
        """Connect, and stay connected until stopped."""
        self._task = self.entry.async_create_background_task(
            self.hass, self.link.run(), f"{DOMAIN} MCP endpoint {self.subentry.title}"
        )

    async def async_stop(self) -> None:
        """Close the socket now; forget this endpoint's repairs."""
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for issue_id in (self._refused_issue, self._over_limit_issue):
            ir.async_delete_issue(self.hass, DOMAIN, issue_id)

    @callback
    def async_listen(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call `listener` when the link changes; return a function that stops it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    @callback
    def _changed(self) -> None:
        for listener in list(self._listeners):
            listener()

    async def _async_serve(
        self,
        read_stream: MemoryObjectReceiveStream[SessionMessage | Exception],
        write_stream: MemoryObjectSendStream[SessionMessage],
    ) -> None:
        """Serve one connection with HA's MCP server over the chosen LLM APIs."""
        known = {api.id for api in llm.async_get_apis(self.hass)}
        apis = [api for api in endpoint_apis(self.subentry) if api in known]
        if missing := set(endpoint_apis(self.subentry)) - known:
            _LOGGER.warning("%s: LLM APIs %s are gone", self.subentry.title, sorted(missing))
        llm_context = llm.LLMContext(
            platform=DOMAIN,
            context=Context(),
            language="*",
            assistant=conversation.DOMAIN,  # the entities exposed to Assist
            device_id=None,
        )
        server = await create_server(self.hass, apis or [llm.LLM_API_ASSIST], llm_context)
        await server.run(read_stream, write_stream, server.create_initialization_options())

    @callback
    def _refused(self) -> None:
        async_raise_issue(
            self.hass,
            self._refused_issue,
            ISSUE_ENDPOINT_REFUSED,
            {"endpoint": self.subentry.title, "console": XIAOZHI_CONSOLE},
            severity=ir.IssueSeverity.ERROR,
        )

    @callback
    def _tools_listed(self, fit: ToolsFit) -> None:
        """The endpoint took the tools: its token works; say if they did not all fit."""
        ir.async_delete_issue(self.hass, DOMAIN, self._refused_issue)
        if not fit.over:
            ir.async_delete_issue(self.hass, DOMAIN, self._over_limit_issue)
            return
        dropped = ", ".join(fit.dropped[:MAX_NAMES_IN_ISSUE])
        if len(fit.dropped) > MAX_NAMES_IN_ISSUE:
            dropped += f" (+{len(fit.dropped) - MAX_NAMES_IN_ISSUE})"
        async_raise_issue(
            self.hass,
            self._over_limit_issue,
            ISSUE_ENDPOINT_OVER_LIMIT,
            {
                "endpoint": self.subentry.title,
                "offered": str(fit.offered),
                "served": str(len(fit.tools)),
                "dropped": dropped,
                "max_tools": str(LIMITS.max_tools),
                "max_chars": str(LIMITS.max_tools_list_chars),
            },
        )


class EndpointLinks:
    """The hub's endpoint services, kept in step with its endpoint subentries."""

    def __init__(self, hass: HomeAssistant, entry: XiaozhiConfigEntry) -> None:
        """Start with none."""
        self._hass = hass
        self._entry = entry
        self.services: dict[str, EndpointService] = {}

    async def async_sync(self) -> None:
        """Stop removed or changed endpoints, start new or changed ones."""
        wanted = {
            subentry_id: subentry
            for subentry_id, subentry in self._entry.subentries.items()
            if subentry.subentry_type == SUBENTRY_MCP_ENDPOINT
        }
        for subentry_id, service in list(self.services.items()):
            subentry = wanted.get(subentry_id)
            if subentry is None or _settings(subentry) != service.settings:
                del self.services[subentry_id]
                await service.async_stop()
        for subentry_id, subentry in wanted.items():
            if subentry_id not in self.services:
                service = self.services[subentry_id] = EndpointService(
                    self._hass, self._entry, subentry
                )
                service.start()

    async def async_stop(self) -> None:
        """Close every endpoint's socket."""
        services, self.services = self.services, {}
        await asyncio.gather(*(service.async_stop() for service in services.values()))
        self._hass.data.get(DATA_ENDPOINTS, {}).pop(self._entry.entry_id, None)


async def async_setup_endpoints(hass: HomeAssistant, entry: XiaozhiConfigEntry) -> EndpointLinks:
    """Connect the hub's endpoints; they close when the hub unloads."""
    links = EndpointLinks(hass, entry)
    hass.data.setdefault(DATA_ENDPOINTS, {})[entry.entry_id] = links
    entry.async_on_unload(links.async_stop)
    await links.async_sync()
    return links


@callback
def async_get_endpoint(
    hass: HomeAssistant, entry: XiaozhiConfigEntry, subentry_id: str
) -> EndpointService | None:
    """The running service of an endpoint subentry."""
    links = hass.data.get(DATA_ENDPOINTS, {}).get(entry.entry_id)
    return None if links is None else links.services.get(subentry_id)
