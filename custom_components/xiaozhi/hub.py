"""The hub: hosts the xiaozhi core inside Home Assistant for one config entry."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from datetime import timedelta
import hmac
from ipaddress import ip_address
import logging
import secrets
import time
from typing import Any

from homeassistant.config_entries import SOURCE_INTEGRATION_DISCOVERY, ConfigEntry
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import device_registry as dr, discovery_flow, issue_registry as ir
from homeassistant.helpers.dispatcher import async_dispatcher_send
from homeassistant.helpers.network import NoURLAvailableError, get_url
from homeassistant.util import dt as dt_util
from yarl import URL

from .const import (
    ACTIVATION_CODE_DIGITS,
    ACTIVATION_CODE_TTL_S,
    AUTH_MODE_ALLOW_LIST,
    AUTH_MODE_BOUND,
    AUTH_MODE_LOCAL_NETWORK,
    CONF_ALLOWED_DEVICES,
    CONF_AUTH_MODE,
    CONF_DEVICES,
    CONF_TOKEN,
    DOMAIN,
    ISSUE_DEVICE_AUTH_FAILING,
    ISSUE_UNREACHABLE_URL,
    MAX_ACTIVATION_ATTEMPTS,
    MAX_AUTH_FAILURES,
    SIGNAL_NEW_DEVICE,
    TOKEN_BYTES,
)
from .core import (
    WEBSOCKET_PATH,
    Activation,
    CloseCode,
    DeviceIdentity,
    DeviceSession,
    OtaRequest,
    SessionEvent,
    SessionHandler,
    WebsocketConfig,
    XiaozhiServer,
)
from .devices import XiaozhiDevice

_LOGGER = logging.getLogger(__name__)

type XiaozhiConfigEntry = ConfigEntry[XiaozhiHub]

ACTIVATION_MESSAGES = {
    "zh": "请在 Home Assistant 中添加此设备，验证码：{code}",
    "en": "Add this device in Home Assistant with code {code}",
}


def _auth_issue_id(device_id: str) -> str:
    return f"{ISSUE_DEVICE_AUTH_FAILING}_{device_id.replace(':', '')}"


def _is_loopback(address: str) -> bool:
    try:
        return ip_address(address).is_loopback
    except ValueError:
        return False


def allowed_devices(options: Mapping[str, Any]) -> set[str]:
    """The MAC addresses of the allow list, in the firmware's form."""
    text = str(options.get(CONF_ALLOWED_DEVICES, ""))
    return {mac.strip().lower().replace("-", ":") for mac in text.replace(",", " ").split()}


@dataclass
class PendingActivation:
    """An unbound device waiting for the user to enter the code it speaks."""

    code: str
    challenge: str
    expires: float  # time.monotonic()
    board: str | None
    firmware_version: str | None
    chip_model: str | None
    attempts: int = 0


class _Unhandled:
    """Serves a bound device whose satellite is not in HA (disabled): its events go nowhere."""

    def session_event(self, session: DeviceSession, event: SessionEvent) -> None:
        """Ignore the event."""

    def audio_received(self, session: DeviceSession, pcm: bytes) -> None:
        """Ignore the audio."""


class XiaozhiHub:
    """Answers OTA checks and lets bound devices open channels to their satellites."""

    websocket_path = WEBSOCKET_PATH

    def __init__(self, hass: HomeAssistant, entry: XiaozhiConfigEntry) -> None:
        """Create the hub for a config entry, with the devices it already knows."""
        self.hass = hass
        self.entry = entry
        self.server = XiaozhiServer(self)
        self.devices: dict[str, XiaozhiDevice] = {
            device_id: XiaozhiDevice(
                device_id,
                board=info.get("board"),
                firmware_version=info.get("firmware_version"),
                chip_model=info.get("chip_model"),
                token=info.get(CONF_TOKEN),
            )
            for device_id, info in entry.data.get(CONF_DEVICES, {}).items()
            if info.get(CONF_TOKEN)
        }
        self.pending: dict[str, PendingActivation] = {}
        self._auth_failures: dict[str, int] = {}

    @property
    def sessions(self) -> set[DeviceSession]:
        """The open device channels."""
        return self.server.sessions

    # --- devices ---------------------------------------------------------------------------------

    @callback
    def _async_update(
        self,
        device: XiaozhiDevice,
        *,
        board: str | None = None,
        firmware_version: str | None = None,
        chip_model: str | None = None,
    ) -> None:
        """Store what a bound device reports about itself, and show it in the registry."""
        before = device.stored()
        device.board = board or device.board
        device.firmware_version = firmware_version or device.firmware_version
        device.chip_model = chip_model or device.chip_model
        if device.stored() != before:
            self._async_save()
            dr.async_get(self.hass).async_get_or_create(
                config_entry_id=self.entry.entry_id, **device.device_info
            )

    @callback
    def _async_save(self) -> None:
        self.hass.config_entries.async_update_entry(
            self.entry,
            data={
                **self.entry.data,
                CONF_DEVICES: {d.device_id: d.stored() for d in self.devices.values()},
            },
        )

    # --- activation ------------------------------------------------------------------------------

    @callback
    def _async_pending(self, request: OtaRequest) -> PendingActivation:
        """Return the device's activation, starting one (and its discovery flow) if needed."""
        pending = self.pending.get(request.device_id)
        if pending is None or pending.expires < time.monotonic():
            pending = self.pending[request.device_id] = PendingActivation(
                code="".join(secrets.choice("0123456789") for _ in range(ACTIVATION_CODE_DIGITS)),
                challenge=secrets.token_hex(16),
                expires=time.monotonic() + ACTIVATION_CODE_TTL_S,
                board=request.board_type or request.board_name,
                firmware_version=request.firmware_version,
                chip_model=request.chip_model,
            )
            _LOGGER.info("Device %s (%s) asks to be added", request.device_id, pending.board)
            discovery_flow.async_create_flow(
                self.hass,
                DOMAIN,
                context={"source": SOURCE_INTEGRATION_DISCOVERY},
                data={"device_id": request.device_id, "board": pending.board or ""},
                discovery_key=discovery_flow.DiscoveryKey(
                    domain=DOMAIN, key=request.device_id, version=1
                ),
            )
        return pending

    @callback
    def async_activate(self, device_id: str, code: str) -> str | None:
        """Bind a device if `code` is the one it speaks; return an error key otherwise."""
        pending = self.pending.get(device_id)
        if pending is None or pending.expires < time.monotonic():
            self.pending.pop(device_id, None)
            return "code_expired"
        if not hmac.compare_digest(code.strip().encode(), pending.code.encode()):
            pending.attempts += 1
            _LOGGER.warning("Wrong activation code for %s (%d)", device_id, pending.attempts)
            if pending.attempts >= MAX_ACTIVATION_ATTEMPTS:
                del self.pending[device_id]  # the device gets a new code on its next check
                return "too_many_attempts"
            return "invalid_code"
        del self.pending[device_id]
        device = self._async_bind(device_id)
        self._async_update(
            device,
            board=pending.board,
            firmware_version=pending.firmware_version,
            chip_model=pending.chip_model,
        )
        _LOGGER.info("Device %s (%s) added", device_id, device.board)
        return None

    @callback
    def _async_bind(self, device_id: str) -> XiaozhiDevice:
        """Add a device with a fresh secret token."""
        device = self.devices[device_id] = XiaozhiDevice(
            device_id, token=secrets.token_urlsafe(TOKEN_BYTES)
        )
        self._async_save()
        async_dispatcher_send(self.hass, SIGNAL_NEW_DEVICE.format(self.entry.entry_id), device)
        return device

    @property
    def _auth_mode(self) -> str:
        mode: str = self.entry.options.get(CONF_AUTH_MODE, AUTH_MODE_BOUND)
        return mode

    def _may_skip_code(self, request: OtaRequest) -> bool:
        """Whether the user's auth mode lets this device in without an activation code."""
        if self._auth_mode == AUTH_MODE_ALLOW_LIST:
            return request.device_id in allowed_devices(self.entry.options)
        if self._auth_mode == AUTH_MODE_LOCAL_NETWORK and request.remote:
            with suppress(ValueError):
                address = ip_address(request.remote)
                return address.is_private or address.is_loopback or address.is_link_local
        return False

    async def activation_done(self, device_id: str) -> bool:
        """The firmware's activation poll: done once the device is bound."""
        return device_id in self.devices

    @callback
    def async_forget(self, device_id: str) -> None:
        """Revoke a device: its token stops working and its channel closes."""
        device = self.devices.pop(device_id, None)
        if device is None:
            return
        self._async_save()
        if device.session is not None:
            self.entry.async_create_background_task(
                self.hass,
                device.session.close(CloseCode.POLICY_VIOLATION, "device removed"),
                "xiaozhi revoke",
            )
        _LOGGER.info("Device %s removed; its token is revoked", device_id)

    # --- OTA and authorization -------------------------------------------------------------------

    async def ota_answer(
        self, request: OtaRequest, default_url: str
    ) -> WebsocketConfig | Activation:
        """Give a bound device its channel; an unbound one an activation code to speak."""
        device = self.devices.get(request.device_id)
        if device is None and self._may_skip_code(request):
            _LOGGER.info("Device %s added without a code (%s)", request.device_id, self._auth_mode)
            device = self._async_bind(request.device_id)
        if device is None:
            pending = self._async_pending(request)
            language = "zh" if (request.language or "").lower().startswith("zh") else "en"
            return Activation(
                code=pending.code,
                message=ACTIVATION_MESSAGES[language].format(code=pending.code),
                challenge=pending.challenge,
            )
        self._async_update(
            device,
            board=request.board_type or request.board_name,
            firmware_version=request.firmware_version,
            chip_model=request.chip_model,
        )
        assert device.token is not None
        url = self._reachable_url(default_url)
        self._async_check_reachable(url, request.remote)
        return WebsocketConfig(url=url, token=device.token)

    @callback
    def _async_check_reachable(self, url: str, remote: str | None) -> None:
        """Raise a repair when a LAN device is sent to a loopback address (a proxy setup)."""
        host = URL(url).host or ""
        loopback = host == "localhost" or _is_loopback(host)
        if loopback and remote is not None and not _is_loopback(remote):
            ir.async_create_issue(
                self.hass,
                DOMAIN,
                ISSUE_UNREACHABLE_URL,
                is_fixable=False,
                severity=ir.IssueSeverity.ERROR,
                translation_key=ISSUE_UNREACHABLE_URL,
                translation_placeholders={"url": url},
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

    async def open_channel(
        self, device: DeviceIdentity, token: str | None
    ) -> SessionHandler | None:
        """Resolve a bound device presenting its own token to its satellite; None if refused."""
        if not self._authorize(device, token):
            return None
        return self.devices[device.device_id].handler or _Unhandled()

    def _authorize(self, device: DeviceIdentity, token: str | None) -> bool:
        """Accept a bound device presenting its own token."""
        known = self.devices.get(device.device_id)
        if known is None or known.token is None:
            return False
        if token is not None and hmac.compare_digest(token.encode(), known.token.encode()):
            if self._auth_failures.pop(device.device_id, 0) >= MAX_AUTH_FAILURES:
                ir.async_delete_issue(self.hass, DOMAIN, _auth_issue_id(device.device_id))
            return True
        failures = self._auth_failures[device.device_id] = (
            self._auth_failures.get(device.device_id, 0) + 1
        )
        if failures == MAX_AUTH_FAILURES:
            # Typically a device holding an old token (HA restored from a backup): it must
            # reboot to fetch its token, or be removed and added again.
            ir.async_create_issue(
                self.hass,
                DOMAIN,
                _auth_issue_id(device.device_id),
                is_fixable=False,
                severity=ir.IssueSeverity.WARNING,
                translation_key=ISSUE_DEVICE_AUTH_FAILING,
                translation_placeholders={"device": known.name, "mac": device.device_id},
            )
        return False

    def timezone_offset_minutes(self) -> int:
        """Set device clocks to HA's time zone."""
        offset = dt_util.now().utcoffset() or timedelta()
        return int(offset.total_seconds() // 60)

    async def async_shutdown(self) -> None:
        """Close every device channel."""
        await self.server.close_all()
