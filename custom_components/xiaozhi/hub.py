"""The hub: the one place that serves xiaozhi devices in this Home Assistant.

It is the core servers' `DeviceGate`, composed of one module per job: the bound devices
(`store.py`), activation codes and the repairs that ask for them (`activation.py`) and
credential checks (`authorization.py`). It runs two transports: the WebSocket on HA's own port
(a channel per conversation) and, once a device is switched to it, the always-connected
MQTT+UDP listeners. The devices' microphones are decoded and scored for voice in a worker
process (`core/worker.py`), off HA's event loop and its GIL. There is at most one hub (the
manifest's `single_config_entry`); it is found with `async_get_hub`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from datetime import timedelta
from ipaddress import ip_address
import logging
from typing import Any

from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import issue_registry as ir
from homeassistant.helpers.aiohttp_client import async_get_clientsession
from homeassistant.helpers.network import NoURLAvailableError, get_url
from homeassistant.util import dt as dt_util
from homeassistant.util.hass_dict import HassKey
from yarl import URL

from .activation import ActivationResult, Activations
from .authorization import Authorization, Identity
from .const import (
    AUTH_MODE_ALLOW_LIST,
    AUTH_MODE_BOUND,
    AUTH_MODE_LOCAL_NETWORK,
    CONF_ADDON_URL,
    CONF_ALLOWED_DEVICES,
    CONF_AUTH_MODE,
    CONF_LINK_SECRET,
    CONF_MQTT_PORT,
    CONF_UDP_PORT,
    DOMAIN,
    EXAMPLE_OTA_URL,
    ISSUE_ADDON_SECRET_REFUSED,
    ISSUE_MQTT_PORTS_IN_USE,
    ISSUE_UNREACHABLE_URL,
    MAX_DEVICES_WITHOUT_CODE,
    MQTT_LISTEN_HOST,
    TRANSPORT_MQTT,
)
from .core import (
    OTA_PATH,
    WEBSOCKET_PATH,
    Activation,
    CloseCode,
    Connection,
    ConnectionHandler,
    DeviceIdentity,
    MqttConfig,
    MqttUdpServer,
    OtaAnswer,
    OtaRequest,
    Session,
    SessionEvent,
    SessionHandler,
    SessionStarted,
    WebsocketConfig,
    XiaozhiServer,
)
from .core.const import (
    DEFAULT_MQTT_PORT,
    DEFAULT_UDP_PORT,
    MQTT_KEEPALIVE_S,
    MQTT_PUBLISH_TOPIC,
)
from .core.errors import CheckInRefusedError
from .core.messages import Alert, DeviceMessage, Listen, ListenState, System
from .core.mqtt_server import device_topic
from .core.offload import Offload
from .core.remote import LinkClient, RelayedSession
from .core.worker import WorkerProcess
from .device_tools import DeviceTools
from .devices import XiaozhiDevice
from .issues import async_raise_issue
from .models import XiaozhiConfigEntry
from .restart_notice import async_render_notice
from .store import DeviceStore, new_token

__all__ = ["XiaozhiConfigEntry", "XiaozhiHub", "async_get_hub", "ota_url"]

_LOGGER = logging.getLogger(__name__)

DATA_HUB: HassKey[XiaozhiHub] = HassKey(f"{DOMAIN}_hub")

PLACEHOLDER_URL = "http://<home-assistant-ip>:8123"  # when HA knows no URL of its own
ACTIVATION_MESSAGES = {
    "zh": "请在 Home Assistant 中添加此设备，验证码：{code}",
    "en": "Add this device in Home Assistant with code {code}",
}


@callback
def ota_url(hass: HomeAssistant, addon_url: str | None = None) -> str:
    """The OTA URL devices on the LAN should use (what the user types into each device).

    With the add-on, it is the add-on's port: on HA's own host when the add-on's address is a
    container name devices cannot resolve (HA OS maps add-on ports on the host).
    """
    try:
        base = URL(get_url(hass, allow_external=False, allow_cloud=False, prefer_external=False))
    except NoURLAvailableError:
        base = URL(PLACEHOLDER_URL)
    if addon_url:
        addon = URL(addon_url)
        host = addon.host or ""
        if not _is_ip(host) and "." not in host and host != "localhost":
            host = base.host or host
        base = addon.with_host(host)
    return str(base.with_path(OTA_PATH))


def _is_ip(host: str) -> bool:
    try:
        ip_address(host)
    except ValueError:
        return False
    return True


@callback
def async_get_hub(hass: HomeAssistant) -> XiaozhiHub | None:
    """Return the loaded hub, if any."""
    return hass.data.get(DATA_HUB)


def _is_loopback(address: str) -> bool:
    try:
        return ip_address(address).is_loopback
    except ValueError:
        return False


def allowed_devices(options: Mapping[str, Any]) -> set[str]:
    """The MAC addresses of the allow list, in the firmware's form."""
    text = str(options.get(CONF_ALLOWED_DEVICES, ""))
    return {mac.strip().lower().replace("-", ":") for mac in text.replace(",", " ").split()}


class _ActivationPrompt:
    """A device waiting for its code may open a channel (clients do, before activating).

    Whatever it says, it is only shown its activation message again: nothing reaches HA.
    """

    def __init__(self, hass: HomeAssistant, message: str) -> None:
        """Prompt with `message` on the channel."""
        self._hass = hass
        self._message = message

    def session_event(self, session: Session, event: SessionEvent) -> None:
        """Show the code when the channel opens and whenever the user talks or types."""
        if isinstance(event, SessionStarted) or (
            isinstance(event, Listen) and event.state is not ListenState.STOP
        ):
            self._hass.async_create_background_task(
                session.send(Alert(status="activation", message=self._message, emotion="link")),
                "xiaozhi activation prompt",
            )

    def audio_received(
        self, session: Session, pcm: bytes, scored: Sequence[tuple[float, float]] | None
    ) -> None:
        """Ignore the audio."""


class _Unhandled:
    """Serves a bound device whose satellite is not in HA (disabled): its events go nowhere."""

    def session_event(self, session: Session, event: SessionEvent) -> None:
        """Ignore the event."""

    def audio_received(
        self, session: Session, pcm: bytes, scored: Sequence[tuple[float, float]] | None
    ) -> None:
        """Ignore the audio."""


class _AlwaysConnected:
    """Follows one device's MQTT connection for the hub: the device records it."""

    def __init__(self, device: XiaozhiDevice) -> None:
        """Follow `device`."""
        self.device = device

    def connection_changed(self, connection: Connection) -> None:
        """Record the connection; a replaced one closing changes nothing."""
        if connection.connected:
            self.device.set_connection(connection)
        elif self.device.connection is connection:
            self.device.set_connection(None)

    def message_received(self, connection: Connection, message: DeviceMessage) -> None:
        """Hand a message sent between sessions to the device's listeners."""
        if self.device.connection is connection:
            self.device.message_received(message)

    def session_handler(self) -> SessionHandler:
        """The device's satellite handles each new session."""
        return self.device.handler or _Unhandled()


class XiaozhiHub:
    """Answers OTA checks and lets bound devices open channels to their satellites."""

    websocket_path = WEBSOCKET_PATH

    def __init__(self, hass: HomeAssistant, entry: XiaozhiConfigEntry) -> None:
        """Compose the hub of a config entry; `async_setup` loads its devices."""
        self.hass = hass
        self.entry = entry
        self.server = XiaozhiServer(self)
        self.mqtt = MqttUdpServer(self)
        self._mqtt_ports: tuple[int, int] | None = None  # what the listeners were opened on
        self.store = DeviceStore(hass, entry)
        self.activations = Activations(hass, entry, self.store)
        self.auth = Authorization(hass, self.store, self.activations)
        self._tools: dict[str, DeviceTools] = {}
        self.link: LinkClient | None = None  # to the add-on, when it serves the devices
        self._link_listeners: list[Callable[[], None]] = []
        self._notices: set[tuple[int, str]] = set()  # (link number, device) given a notice
        # The voice model would otherwise run on HA's event loop (or hold the GIL on a thread
        # every device waits on): at 100 devices that was a third of a core, and frames late.
        self.microphone_worker = WorkerProcess("Xiaozhi microphone worker")
        self._microphones = Offload(hass.loop, self.microphone_worker)
        self._worker_starting: asyncio.Future[None] | None = None

    async def async_setup(self) -> None:
        """Load the bound devices and become the hub the endpoints serve."""
        await self.store.async_load()
        self.hass.data[DATA_HUB] = self
        self.entry.async_on_unload(self._async_unset)
        on_mqtt = any(d.transport == TRANSPORT_MQTT for d in self.devices.values())
        if on_mqtt and not self.uses_addon:
            await self.async_start_mqtt()

    @property
    def uses_addon(self) -> bool:
        """Whether the add-on serves the devices (and their MQTT connections)."""
        return bool(self.entry.data.get(CONF_ADDON_URL))

    @callback
    def async_start_link(self) -> None:
        """Link to the add-on, if it serves the devices; once the satellites exist.

        The add-on hands over the channels it kept at once: their handlers must be there.
        """
        if addon_url := self.entry.data.get(CONF_ADDON_URL):
            self.link = LinkClient(
                self,
                addon_url,
                self.entry.data[CONF_LINK_SECRET],
                async_get_clientsession(self.hass),
                state_changed=self._async_link_changed,
                session_started=self._async_relayed_session_started,
            )
            self.link.start()

    @callback
    def _async_relayed_session_started(self, session: RelayedSession) -> None:
        """Give the add-on the device's spoken restart notice (once per link and device)."""
        link = self.link
        device = self.devices.get(session.device.device_id)
        if link is None or device is None or (link.links, device.device_id) in self._notices:
            return
        self._notices.add((link.links, device.device_id))

        async def _async_send() -> None:
            notice = await async_render_notice(self.hass, device, session.reply_audio.sample_rate)
            if notice is not None and self.link is link:
                link.send(notice)

        self.entry.async_create_background_task(
            self.hass, _async_send(), f"xiaozhi restart notice {device.device_id}"
        )

    @callback
    def _async_link_changed(self) -> None:
        """Repairs says so while the add-on refuses the secret; listeners update."""
        if self.link is not None and self.link.secret_refused:
            async_raise_issue(
                self.hass,
                ISSUE_ADDON_SECRET_REFUSED,
                ISSUE_ADDON_SECRET_REFUSED,
                {"url": self.entry.data.get(CONF_ADDON_URL, "")},
                ir.IssueSeverity.ERROR,
            )
        else:
            ir.async_delete_issue(self.hass, DOMAIN, ISSUE_ADDON_SECRET_REFUSED)
        for listener in list(self._link_listeners):
            listener()

    @callback
    def async_listen_link(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call `listener` when the link to the add-on goes up or down."""
        self._link_listeners.append(listener)
        return lambda: self._link_listeners.remove(listener)

    @property
    def ota_url(self) -> str:
        """The OTA URL devices should use: HA's own, or the add-on's."""
        return ota_url(self.hass, self.entry.data.get(CONF_ADDON_URL))

    @callback
    def _async_unset(self) -> None:
        if self.hass.data.get(DATA_HUB) is self:
            del self.hass.data[DATA_HUB]

    @property
    def devices(self) -> Mapping[str, XiaozhiDevice]:
        """The bound devices, by MAC."""
        return self.store.devices

    def device_tools(self, device: XiaozhiDevice) -> DeviceTools:
        """The MCP tools of a bound device (followed from the first time they are asked for)."""
        if (tools := self._tools.get(device.device_id)) is None or tools.device is not device:
            tools = self._tools[device.device_id] = DeviceTools(
                self.hass, self.entry, device, self.store
            )
        return tools

    @property
    def sessions(self) -> set[Session]:
        """The open device channels, over any transport, and those the add-on relays."""
        relayed = set(self.link.sessions.values()) if self.link is not None else set()
        return self.server.sessions | self.mqtt.sessions | relayed

    # --- the always-connected listeners ----------------------------------------------------------

    @property
    def mqtt_ports(self) -> tuple[int, int]:
        """The MQTT (TCP) and UDP ports the options ask for."""
        options = self.entry.options
        return (
            int(options.get(CONF_MQTT_PORT, DEFAULT_MQTT_PORT)),
            int(options.get(CONF_UDP_PORT, DEFAULT_UDP_PORT)),
        )

    async def async_start_mqtt(self) -> bool:
        """Open the MQTT and UDP listeners (if not open); a port in use raises a repair."""
        ports = self.mqtt_ports
        if self.mqtt.running:
            if self._mqtt_ports == ports:
                return True
            await self.mqtt.async_close()  # the ports changed: the devices reconnect
        try:
            await self.mqtt.async_start(MQTT_LISTEN_HOST, *ports)
        except OSError as err:
            _LOGGER.error(
                "Cannot serve always-connected devices on TCP %d / UDP %d: %s", *ports, err
            )
            async_raise_issue(
                self.hass,
                ISSUE_MQTT_PORTS_IN_USE,
                ISSUE_MQTT_PORTS_IN_USE,
                {"mqtt_port": str(ports[0]), "udp_port": str(ports[1]), "error": str(err)},
                ir.IssueSeverity.ERROR,
            )
            return False
        self._mqtt_ports = ports
        ir.async_delete_issue(self.hass, DOMAIN, ISSUE_MQTT_PORTS_IN_USE)
        return True

    async def async_options_updated(self) -> None:
        """Reopen the listeners on changed ports."""
        if self.mqtt.running and self._mqtt_ports != self.mqtt_ports and not self.uses_addon:
            await self.async_start_mqtt()

    async def async_set_transport(self, device: XiaozhiDevice, transport: str) -> None:
        """The user switched how a device connects: it applies from the device's next start.

        A device reachable now and not in a conversation is restarted to apply it at once.
        """
        if transport == device.transport:
            return
        await self.store.async_set_transport(device, transport)
        if transport == TRANSPORT_MQTT and not self.uses_addon:
            await self.async_start_mqtt()
        in_conversation = device.session is not None and device.session.speaking
        if device.reachable and not in_conversation:
            _LOGGER.info("Restarting %s to switch it to %s", device.device_id, transport)
            await device.async_send(System(command="reboot"))

    # --- what the user does ----------------------------------------------------------------------

    async def async_activate(self, device_id: str, code: str) -> ActivationResult:
        """The user typed the code a device speaks."""
        result = await self.activations.async_confirm(device_id, code)
        if result is ActivationResult.ADDED:
            self.auth.async_forget(device_id)  # a re-added device starts with no repairs
        return result

    async def async_forget(self, device_id: str) -> None:
        """Revoke a device: its token stops working and its channel closes."""
        device = await self.store.async_forget(device_id)
        self.auth.async_forget(device_id)
        if device is None:
            return
        if device.session is not None:
            self.entry.async_create_background_task(
                self.hass,
                device.session.close(CloseCode.POLICY_VIOLATION, "device removed"),
                "xiaozhi revoke",
            )
        if device.connection is not None:
            self.entry.async_create_background_task(
                self.hass, device.connection.close("device removed"), "xiaozhi revoke mqtt"
            )
        _LOGGER.info("Device %s removed; its token is revoked", device_id)

    # --- DeviceGate ------------------------------------------------------------------------------

    async def ota_answer(self, request: OtaRequest, default_url: str) -> OtaAnswer:
        """Give a bound device its channel; anyone else an activation code and a channel to be."""
        who, device = self.auth.identify(request.device_id, request.client_id)
        url = self._reachable_url(default_url)
        if device is not None and who in (Identity.BOUND, Identity.LEGACY):
            self.store.async_update_info(
                device,
                board=request.board_type or request.board_name,
                firmware_version=request.firmware_version,
                chip_model=request.chip_model,
            )
            self._async_check_reachable(url, request.remote)
            device.channel_url = url  # the camera uploads to the host the device reached
            # A device bound before Client-Ids were kept keeps the token in its NVS (an omitted
            # key is not erased) until a channel with that token records its Client-Id.
            token = device.token if who is Identity.BOUND else None
            return OtaAnswer(
                WebsocketConfig(url=url, token=token),
                mqtt=await self._async_mqtt_config(device, url) if who is Identity.BOUND else None,
            )
        if request.client_id is None:
            _LOGGER.warning("Rejected OTA request from %s: no Client-Id", request.remote)
            raise CheckInRefusedError(400, "Client-Id header (or uuid in the body) is required")
        if device is None and self._may_skip_code(request):
            device = await self.store.async_bind(
                request.device_id,
                request.client_id,
                token=new_token(),
                added_by=self._auth_mode,
            )
            self.activations.async_bound(device)
            _LOGGER.info("Device %s added without a code (%s)", device.device_id, device.added_by)
            return OtaAnswer(
                WebsocketConfig(url=url, token=device.token),
                mqtt=await self._async_mqtt_config(device, url),
            )
        pending = self.activations.async_check_in(request, request.client_id)
        if device is not None:
            self.auth.async_identity_changed(device)
        return OtaAnswer(
            WebsocketConfig(url=url, token=pending.token),
            Activation(
                code=pending.code,
                message=self._activation_message(pending.code, request.language or "en"),
                challenge=pending.challenge,
            ),
        )

    async def _async_mqtt_config(self, device: XiaozhiDevice, url: str) -> MqttConfig | None:
        """The `mqtt` block of a device switched to MQTT+UDP, once the listeners are open.

        Without it the device uses the WebSocket, so a port in use leaves devices working.
        """
        if device.transport != TRANSPORT_MQTT:
            return None
        if self.uses_addon:  # the add-on's listeners, on the host the device reached
            port = self.link.mqtt_port if self.link is not None else None
        else:
            port = self.mqtt.mqtt_port if await self.async_start_mqtt() else None
        if port is None or device.client_id is None or device.mqtt_password is None:
            return None
        return MqttConfig(
            endpoint=f"{URL(url).host}:{port}",
            client_id=device.client_id,
            username=device.device_id,
            password=device.mqtt_password,
            keepalive=MQTT_KEEPALIVE_S,
            publish_topic=MQTT_PUBLISH_TOPIC,
            subscribe_topic=device_topic(device.device_id),
        )

    async def activation_done(self, device_id: str, client_id: str | None) -> bool:
        """The firmware's activation poll: done once this pair is bound (and on disk)."""
        who, _ = self.auth.identify(device_id, client_id)
        return who in (Identity.BOUND, Identity.LEGACY)

    async def open_channel(
        self, device: DeviceIdentity, token: str | None
    ) -> SessionHandler | None:
        """Resolve a bound device presenting its own token to its satellite; None if refused."""
        bound = await self.auth.async_authorize(device, token)
        if bound is not None:
            return bound.handler or _Unhandled()
        if (pending := self.activations.held(device.device_id, device.client_id, token)) is None:
            return None
        return _ActivationPrompt(self.hass, self._activation_message(pending.code))

    def _activation_message(self, code: str, language: str | None = None) -> str:
        language = language or self.hass.config.language
        return ACTIVATION_MESSAGES["zh" if language.lower().startswith("zh") else "en"].format(
            code=code
        )

    async def open_connection(
        self, device: DeviceIdentity, password: str | None
    ) -> ConnectionHandler | None:
        """Resolve a bound device's MQTT credentials to what follows its connection."""
        bound = await self.auth.async_authorize(device, password, mqtt=True)
        if bound is None:
            return None
        return _AlwaysConnected(bound)

    @property
    def microphones(self) -> Offload:
        """Where the microphones of the devices served here are decoded and scored.

        Its worker process starts with the first channel served here (asked for when the
        session is made), ahead of its first audio; channels the add-on serves never ask.
        """
        if self._worker_starting is None:
            self._worker_starting = self.hass.async_add_executor_job(self.microphone_worker.start)
        return self._microphones

    def timezone_offset_minutes(self) -> int:
        """Set device clocks to HA's time zone."""
        offset = dt_util.now().utcoffset() or timedelta()
        return int(offset.total_seconds() // 60)

    # --- who may skip the code -------------------------------------------------------------------

    @property
    def _auth_mode(self) -> str:
        mode: str = self.entry.options.get(CONF_AUTH_MODE, AUTH_MODE_BOUND)
        return mode

    def _may_skip_code(self, request: OtaRequest) -> bool:
        """Whether the user's auth mode lets this device in without an activation code."""
        if self._auth_mode == AUTH_MODE_ALLOW_LIST:
            return request.device_id in allowed_devices(self.entry.options)
        if self._auth_mode != AUTH_MODE_LOCAL_NETWORK or request.remote is None:
            return False
        if request.origin is not None:  # a browser: any web page the user opens could send it
            return False
        if self.store.count_added_by(AUTH_MODE_LOCAL_NETWORK) >= MAX_DEVICES_WITHOUT_CODE:
            _LOGGER.warning(
                "Device %s needs its code: %d devices were added without one",
                request.device_id,
                MAX_DEVICES_WITHOUT_CODE,
            )
            return False
        with suppress(ValueError):
            address = ip_address(request.remote)
            return address.is_private or address.is_loopback or address.is_link_local
        return False

    # --- the channel URL -------------------------------------------------------------------------

    @callback
    def _async_check_reachable(self, url: str, remote: str | None) -> None:
        """Raise a repair when a LAN device is sent to a loopback address (a proxy setup)."""
        host = URL(url).host or ""
        loopback = host == "localhost" or _is_loopback(host)
        if loopback and remote is not None and not _is_loopback(remote):
            async_raise_issue(
                self.hass,
                ISSUE_UNREACHABLE_URL,
                ISSUE_UNREACHABLE_URL,
                {"url": url, "example_url": EXAMPLE_OTA_URL},
                ir.IssueSeverity.ERROR,
            )
        else:
            ir.async_delete_issue(self.hass, DOMAIN, ISSUE_UNREACHABLE_URL)

    def _reachable_url(self, default_url: str) -> str:
        """Return `default_url`, or HA's own internal URL when the firmware could not parse it."""
        url = URL(default_url)
        if url.host and ":" not in url.host:  # the firmware cannot parse IPv6 literals
            return default_url
        try:
            base = URL(get_url(self.hass, allow_external=False, allow_cloud=False))
        except NoURLAvailableError:
            return default_url
        return str(url.with_host(base.host or "").with_port(base.port))

    async def async_shutdown(self) -> None:
        """Close every device channel and the always-connected listeners.

        The add-on's channels stay open: it keeps them for the next link.
        """
        if self.link is not None:
            await self.link.stop()
            ir.async_delete_issue(self.hass, DOMAIN, ISSUE_ADDON_SECRET_REFUSED)
        await self.mqtt.async_close()
        await self.server.close_all()
        await self.hass.async_add_executor_job(self.microphone_worker.close)
        if self._worker_starting is not None:
            await self._worker_starting  # done by now: `close` waited for it
