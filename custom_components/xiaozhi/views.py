"""The device-facing HTTP views, mounted on HA's own server.

aiohttp's router cannot remove routes, so the views are registered once and find the hub at
request time; with no hub loaded they answer 404, which is what "unmounted" means here.

CORS (for browser clients such as the reference server's test page) is on the OTA and activate
endpoints only. HA's `cors_allowed` adds `Access-Control-Allow-Origin` to their responses, but
its preflight allows only a fixed list of headers, without the `Device-Id` and `Client-Id` these
clients send; so their preflight is answered by a route of ours, registered first under its own
name (aiohttp resolves routes of the same path in registration order).
"""

from __future__ import annotations

from http import HTTPStatus

from aiohttp import web
from homeassistant.components.http.ban import process_wrong_login
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers.http import KEY_HASS, HomeAssistantView
from homeassistant.util.hass_dict import HassKey

from .const import DOMAIN
from .core import ACTIVATE_PATH, OTA_PATH, WEBSOCKET_PATH, XiaozhiServer
from .core.errors import XiaozhiError
from .core.server import channel_credentials
from .hub import XiaozhiHub, async_get_hub
from .vision import XiaozhiVisionView

DATA_VIEWS: HassKey[bool] = HassKey(f"{DOMAIN}_views")
PREFLIGHT_ROUTE_NAME = f"{DOMAIN}_preflight_{{}}"  # formatted with a number


def _hub(request: web.Request) -> XiaozhiHub | None:
    return async_get_hub(request.app[KEY_HASS])


def _not_mounted() -> web.Response:
    return web.Response(status=404, text="Xiaozhi is not set up")


class XiaozhiOtaView(HomeAssistantView):
    """The OTA endpoint a device checks at every boot (no HA login: the device has none)."""

    url = OTA_PATH
    extra_urls = [OTA_PATH.rstrip("/")]  # noqa: RUF012
    name = "api:xiaozhi:ota"
    requires_auth = False
    cors_allowed = True

    async def post(self, request: web.Request) -> web.Response:
        """Answer an OTA check."""
        return await _handle_ota(request)


class XiaozhiOtaGetView(HomeAssistantView):
    """The same check without a body (GET), for clients that send none.

    A view of its own: HA enables CORS once per path, on the first method's route, and it must
    be the POST that browsers send.
    """

    url = OTA_PATH
    extra_urls = [OTA_PATH.rstrip("/")]  # noqa: RUF012
    name = "api:xiaozhi:ota:get"
    requires_auth = False

    async def get(self, request: web.Request) -> web.Response:
        """Answer an OTA check without a body."""
        return await _handle_ota(request)


async def _handle_ota(request: web.Request) -> web.Response:
    if (hub := _hub(request)) is None:
        return _not_mounted()
    return await hub.server.handle_ota(request)


class XiaozhiActivateView(HomeAssistantView):
    """The firmware's activation poll, next to the OTA endpoint."""

    url = ACTIVATE_PATH
    name = "api:xiaozhi:activate"
    requires_auth = False
    cors_allowed = True

    async def post(self, request: web.Request) -> web.Response:
        """Answer 200 once the device is bound, 202 while waiting for the code."""
        if (hub := _hub(request)) is None:
            return _not_mounted()
        return await hub.server.handle_activate(request)


class XiaozhiWebSocketView(HomeAssistantView):
    """The WebSocket endpoint a device opens for each conversation."""

    url = WEBSOCKET_PATH
    extra_urls = [WEBSOCKET_PATH.rstrip("/")]  # noqa: RUF012
    name = "api:xiaozhi:websocket"
    requires_auth = False

    async def get(self, request: web.Request) -> web.StreamResponse:
        """Run a device channel; a refused guess counts as a failed login (HA's IP bans).

        A bound device presenting an old token (HA restored from a backup) is not a guess: it
        gets a repair instead, and its current token at its next OTA check.
        """
        if (hub := _hub(request)) is None:
            return _not_mounted()
        response = await hub.server.handle_websocket(request)
        if response.status == HTTPStatus.FORBIDDEN and _is_guess(hub, request):
            await process_wrong_login(request)
        return response


def _is_guess(hub: XiaozhiHub, request: web.Request) -> bool:
    try:
        identity, token = channel_credentials(request)
    except XiaozhiError:
        return True
    return hub.auth.is_guess(identity, token)


@callback
def async_register_views(hass: HomeAssistant) -> None:
    """Register the views once per HA run (the preflight routes first)."""
    if hass.data.get(DATA_VIEWS):
        return
    router = hass.http.app.router
    for number, path in enumerate((OTA_PATH, OTA_PATH.rstrip("/"), ACTIVATE_PATH)):
        router.add_route(
            "OPTIONS",
            path,
            XiaozhiServer.handle_preflight,
            name=PREFLIGHT_ROUTE_NAME.format(number),
        )
    hass.http.register_view(XiaozhiOtaView())
    hass.http.register_view(XiaozhiOtaGetView())
    hass.http.register_view(XiaozhiActivateView())
    hass.http.register_view(XiaozhiWebSocketView())
    hass.http.register_view(XiaozhiVisionView())
    hass.data[DATA_VIEWS] = True
