"""A device's own tools in HA: its MCP client while it is reachable, and what they report.

One `DeviceTools` per device (kept by the hub), with one MCP client per channel: a WebSocket
device's session, or an always-connected device's MQTT connection (its sessions come and go on
it, so its tools stay callable between conversations). When the channel opens it sends
`initialize` (with the camera's upload URL and token) and lists the tools; the names are kept
with the device so its entities exist while it is away. Entities and the LLM API call tools
through `async_call`, which turns every failure into a clear `HomeAssistantError`.

`handle` is the one place the device's MCP messages reach the client: the satellite hands in
those of a session, the device's listener those sent between sessions.
"""

from __future__ import annotations

from collections.abc import Callable
import logging
from typing import Any, Final

from homeassistant.core import CALLBACK_TYPE, HomeAssistant, callback
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers.dispatcher import async_dispatcher_send
from homeassistant.helpers.network import NoURLAvailableError, get_url
from homeassistant.util import dt as dt_util
from yarl import URL

from .const import DOMAIN, SIGNAL_TOOLS_CHANGED
from .core import Connection, Session
from .core.const import VISION_PATH
from .core.host import is_connection
from .core.mcp import (
    DeviceGoneError,
    DeviceTool,
    McpClient,
    McpError,
    McpTimeoutError,
    parse_json_text,
)
from .core.messages import DeviceMessage, JsonObject, Mcp
from .devices import DeviceUnreachableError, XiaozhiDevice
from .models import XiaozhiConfigEntry
from .store import DeviceStore, new_token

_LOGGER = logging.getLogger(__name__)

STATUS_TOOL: Final = "self.get_device_status"
MAX_STATUS_KEYS: Final = 32  # values kept from one status answer


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """`{"battery": {"level": 80}}` -> `{"battery.level": 80}` (scalars only)."""
    if not isinstance(value, dict):
        return {prefix: value} if prefix and isinstance(value, str | int | float | bool) else {}
    flat: dict[str, Any] = {}
    for key, item in value.items():
        flat |= _flatten(item, f"{prefix}.{key}" if prefix else str(key))
    return flat


class DeviceTools:
    """The MCP tools of one device, their last reported values and the camera's last photo."""

    def __init__(
        self,
        hass: HomeAssistant,
        entry: XiaozhiConfigEntry,
        device: XiaozhiDevice,
        store: DeviceStore,
    ) -> None:
        """Follow the device's channels."""
        self.hass = hass
        self.entry = entry
        self.device = device
        self.store = store
        self.tools: dict[str, DeviceTool] = {}  # offered on the open channel (empty while away)
        self.status: dict[str, Any] = {}  # the last status answer, flattened
        self.photo: bytes | None = None
        self.photo_at = dt_util.utcnow()
        # What the client talks over: the MQTT connection, else the session (WebSocket).
        self._channel: Connection | Session | None = None
        self._client: McpClient | None = None
        self._listeners: list[Callable[[], None]] = []
        entry.async_on_unload(device.async_listen(self._async_device_changed))
        entry.async_on_unload(device.async_listen_messages(self._async_message_received))
        entry.async_on_unload(self._async_stop)
        self._async_device_changed()

    # --- the channel -----------------------------------------------------------------------------

    @callback
    def handle(self, session: Session | None, message: Mcp) -> None:
        """An MCP message from the device: in `session`, or between sessions (None)."""
        channel = self._channel
        if self._client is None or channel is None:
            return
        if is_connection(channel):
            # Calls go over whichever way reaches the device (`async_send`): so do answers.
            ours = session is None or session is channel.session or session is self.device.session
        else:
            ours = session is channel
        if ours:
            self._client.handle(message.payload)

    @callback
    def _async_message_received(self, message: DeviceMessage) -> None:
        """What the device sends between sessions: its MCP answers are the client's."""
        if isinstance(message, Mcp):
            self.handle(None, message)

    def _channel_now(self) -> Connection | Session | None:
        """An always-connected device's MQTT connection, else its open session."""
        connection = self.device.connection
        if connection is not None and connection.connected:
            return connection
        return self.device.session

    @callback
    def _async_device_changed(self) -> None:
        channel = self._channel_now()
        if channel is self._channel:
            return
        self._async_stop()
        if channel is None:
            return
        self._channel = channel
        if is_connection(channel):
            client = McpClient(self._async_send, self.device.device_id)
        else:
            session = channel
            client = McpClient(
                lambda payload: session.send(Mcp(payload=payload)), self.device.device_id
            )
        self._client = client
        self.entry.async_create_background_task(
            self.hass, self._async_start(client), f"xiaozhi tools {self.device.device_id}"
        )

    async def _async_send(self, payload: JsonObject) -> None:
        """Send over the open session, else over the MQTT connection."""
        try:
            await self.device.async_send(Mcp(payload=payload))
        except DeviceUnreachableError as err:
            raise DeviceGoneError("the device is not connected") from err

    @callback
    def _async_stop(self) -> None:
        if self._client is not None:
            self._client.close()
        self._client = self._channel = None
        if self.tools:
            self.tools = {}
            self._async_notify()

    async def _async_start(self, client: McpClient) -> None:
        """Introduce ourselves, list the tools, read the status."""
        try:
            await client.initialize(self.vision_url(), self._vision_token())
            tools = await client.list_tools()
        except DeviceGoneError:
            _LOGGER.debug("Device %s left before listing its tools", self.device.name)
            return
        except McpError as err:
            # str(err): a record holding the exception would keep the session's frames alive.
            _LOGGER.warning(
                "Device %s: its tools could not be listed: %s", self.device.name, str(err)
            )
            return
        if client is not self._client:
            return
        self.tools = {tool.name: tool for tool in tools}
        _LOGGER.debug("Device %s offers %d tools", self.device.name, len(tools))
        names = sorted(self.tools)
        if names != sorted(self.device.tool_names):
            self.device.tool_names = names
            self.store.async_save_later()
            async_dispatcher_send(
                self.hass, SIGNAL_TOOLS_CHANGED.format(self.entry.entry_id), self.device
            )
        self._async_notify()
        await self.async_refresh_status()

    def vision_url(self) -> str | None:
        """Where the camera uploads: HA at the address the device reached it, else HA's URL.

        With the add-on the device reached the add-on, which does not take photos: they go to
        HA's own port on that host (the add-on's ports are mapped on HA's host).
        """
        try:
            base: URL | None = URL(get_url(self.hass, allow_external=False, allow_cloud=False))
        except NoURLAvailableError:
            base = None
        if self.device.channel_url:
            url = URL(self.device.channel_url)
            scheme = "https" if url.scheme == "wss" else "http"
            url = url.with_scheme(scheme).with_path(VISION_PATH).with_query(None)
            if self.entry.runtime_data.uses_addon:
                url = url.with_port(base.port if base is not None else None)
            return str(url)
        if base is None:
            return None
        return str(base.with_path(VISION_PATH))

    def _vision_token(self) -> str:
        if self.device.vision_token is None:
            self.device.vision_token = new_token()
            self.store.async_save_later()
        return self.device.vision_token

    # --- calls -----------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether the device is reachable and its tools are listed."""
        return self._client is not None and bool(self.tools) and self.device.reachable

    def has(self, name: str) -> bool:
        """Whether the device is reachable and offers this tool."""
        return self._client is not None and name in self.tools and self.device.reachable

    async def async_call(self, name: str, arguments: JsonObject | None = None) -> str:
        """Call a tool; refresh the status after it. Failures raise `HomeAssistantError`."""
        client = self._client
        placeholders = {"device": self.device.name, "tool": name}
        if client is None or not self.has(name):
            raise HomeAssistantError(
                translation_domain=DOMAIN,
                translation_key="tool_unavailable",
                translation_placeholders=placeholders,
            )
        try:
            text = await client.call_tool(name, arguments)
        except McpTimeoutError as err:
            raise HomeAssistantError(
                translation_domain=DOMAIN,
                translation_key="tool_timeout",
                translation_placeholders=placeholders,
            ) from err
        except DeviceGoneError as err:
            raise HomeAssistantError(
                translation_domain=DOMAIN,
                translation_key="tool_device_gone",
                translation_placeholders=placeholders,
            ) from err
        except McpError as err:
            raise HomeAssistantError(
                translation_domain=DOMAIN,
                translation_key="tool_failed",
                translation_placeholders=placeholders | {"error": str(err)[:200]},
            ) from err
        if name == STATUS_TOOL:
            self._async_set_status(text)
        else:
            self.entry.async_create_background_task(
                self.hass, self.async_refresh_status(), "xiaozhi status"
            )
        return text

    async def async_refresh_status(self) -> None:
        """Read the device's status (volume, brightness, battery, ...) if it reports one."""
        if not self.has(STATUS_TOOL):
            return
        try:
            await self.async_call(STATUS_TOOL)
        except HomeAssistantError as err:
            _LOGGER.debug("Device %s: no status: %s", self.device.name, str(err))

    @callback
    def _async_set_status(self, text: str) -> None:
        status = parse_json_text(text)
        if not isinstance(status, dict):
            _LOGGER.warning("Device %s: status is not a JSON object", self.device.name)
            return
        self.status = dict(list(_flatten(status).items())[:MAX_STATUS_KEYS])
        keys = sorted(self.status)
        if keys != sorted(self.device.status_keys):
            self.device.status_keys = keys
            self.store.async_save_later()
            async_dispatcher_send(
                self.hass, SIGNAL_TOOLS_CHANGED.format(self.entry.entry_id), self.device
            )
        self._async_notify()

    @callback
    def async_set_value(self, key: str, value: Any) -> None:
        """Show a value a call just set, before the status confirms it."""
        self.status[key] = value
        self._async_notify()

    @callback
    def async_set_photo(self, jpeg: bytes) -> None:
        """Keep the camera's latest photo."""
        self.photo = jpeg
        self.photo_at = dt_util.utcnow()
        self._async_notify()

    # --- listeners -------------------------------------------------------------------------------

    @callback
    def async_listen(self, listener: Callable[[], None]) -> CALLBACK_TYPE:
        """Call `listener` when tools, values or the photo change."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    @callback
    def _async_notify(self) -> None:
        for listener in list(self._listeners):
            listener()
