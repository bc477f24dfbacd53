"""The device-facing HTTP views, mounted on HA's own server.

aiohttp's router cannot remove routes, so the views are registered once and find the loaded hub
at request time; with no hub loaded they answer 404, which is what "unmounted" means here.
"""

from __future__ import annotations

from http import HTTPStatus

from aiohttp import web
from homeassistant.components.http import KEY_HASS, HomeAssistantView
from homeassistant.components.http.ban import process_wrong_login
from homeassistant.core import HomeAssistant, callback
from homeassistant.util.hass_dict import HassKey

from .const import DOMAIN
from .core import ACTIVATE_PATH, OTA_PATH, WEBSOCKET_PATH
from .hub import XiaozhiHub

DATA_VIEWS: HassKey[bool] = HassKey(f"{DOMAIN}_views")


def _loaded_hub(hass: HomeAssistant) -> XiaozhiHub | None:
    for entry in hass.config_entries.async_loaded_entries(DOMAIN):
        hub: XiaozhiHub = entry.runtime_data
        return hub
    return None


def _not_mounted() -> web.Response:
    return web.Response(status=404, text="Xiaozhi is not set up")


class XiaozhiOtaView(HomeAssistantView):
    """The OTA endpoint a device checks at every boot (no HA login: the device has none)."""

    url = OTA_PATH
    extra_urls = [OTA_PATH.rstrip("/")]  # noqa: RUF012
    name = "api:xiaozhi:ota"
    requires_auth = False

    async def get(self, request: web.Request) -> web.Response:
        """Answer an OTA check without a body."""
        return await self.post(request)

    async def post(self, request: web.Request) -> web.Response:
        """Answer an OTA check."""
        if (hub := _loaded_hub(request.app[KEY_HASS])) is None:
            return _not_mounted()
        return await hub.server.handle_ota(request)


class XiaozhiActivateView(HomeAssistantView):
    """The firmware's activation poll, next to the OTA endpoint."""

    url = ACTIVATE_PATH
    name = "api:xiaozhi:activate"
    requires_auth = False

    async def post(self, request: web.Request) -> web.Response:
        """Answer 200 once the device is bound, 202 while waiting for the code."""
        if (hub := _loaded_hub(request.app[KEY_HASS])) is None:
            return _not_mounted()
        return await hub.server.handle_activate(request)


class XiaozhiWebSocketView(HomeAssistantView):
    """The WebSocket endpoint a device opens for each conversation."""

    url = WEBSOCKET_PATH
    extra_urls = [WEBSOCKET_PATH.rstrip("/")]  # noqa: RUF012
    name = "api:xiaozhi:websocket"
    requires_auth = False

    async def get(self, request: web.Request) -> web.StreamResponse:
        """Run a device channel; a refused token counts as a failed login (HA's IP bans)."""
        if (hub := _loaded_hub(request.app[KEY_HASS])) is None:
            return _not_mounted()
        response = await hub.server.handle_websocket(request)
        if response.status == HTTPStatus.FORBIDDEN:
            await process_wrong_login(request)
        return response


@callback
def async_register_views(hass: HomeAssistant) -> None:
    """Register the views once per HA run."""
    if hass.data.get(DATA_VIEWS):
        return
    hass.http.register_view(XiaozhiOtaView())
    hass.http.register_view(XiaozhiActivateView())
    hass.http.register_view(XiaozhiWebSocketView())
    hass.data[DATA_VIEWS] = True
