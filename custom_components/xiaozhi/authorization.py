"""Authorization: a bound device is the pair (MAC, Client-Id) it was added as, plus its token.

- Anyone presenting a bound MAC with another (or no) Client-Id is treated as an unknown device,
  and never changes the bound one.
- A bound pair presenting a wrong token is a device holding an old token (HA restored from a
  backup), not a guess: it gets a repair, not an IP ban, and its next OTA check gives it the
  current token.
- Devices bound before Client-Ids were kept have theirs recorded by the first channel that
  presents their token (the token proves it; their OTA answers leave the token out until then).
"""

from __future__ import annotations

from enum import Enum
import hmac
import logging

from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import issue_registry as ir

from .activation import Activations
from .const import (
    DOMAIN,
    ISSUE_DEVICE_AUTH_FAILING,
    ISSUE_DEVICE_IDENTITY_CHANGED,
    MAX_AUTH_FAILURES,
)
from .core import DeviceIdentity
from .devices import XiaozhiDevice
from .issues import async_delete_device_issues, async_raise_issue, device_issue_id
from .store import DeviceStore

_LOGGER = logging.getLogger(__name__)


class Identity(Enum):
    """Who a request claims to be, against the bound devices."""

    BOUND = "bound"  # a bound MAC with its own Client-Id
    LEGACY = "legacy"  # a bound MAC whose Client-Id is not known yet (bound before 0.2)
    OTHER = "other"  # a bound MAC with another Client-Id, or none
    UNKNOWN = "unknown"  # a MAC nobody bound


@callback
def _async_raise(hass: HomeAssistant, kind: str, device: XiaozhiDevice) -> None:
    placeholders = {"device": device.name, "mac": device.device_id}
    async_raise_issue(hass, device_issue_id(kind, device.device_id), kind, placeholders)


def _same(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and hmac.compare_digest(a.encode(), b.encode())


class Authorization:
    """Checks device credentials, tracks failures, and raises repairs."""

    def __init__(self, hass: HomeAssistant, store: DeviceStore, activations: Activations) -> None:
        """Check against the bound devices and the devices waiting for their code."""
        self.hass = hass
        self.store = store
        self.activations = activations
        self._failures: dict[str, int] = {}  # bound MAC -> refused channels in a row

    def identify(
        self, device_id: str, client_id: str | None
    ) -> tuple[Identity, XiaozhiDevice | None]:
        """Return who (MAC, Client-Id) is, and the bound device with that MAC."""
        device = self.store.get(device_id)
        if device is None:
            return Identity.UNKNOWN, None
        if device.client_id is None:
            return Identity.LEGACY, device
        if _same(client_id, device.client_id):
            return Identity.BOUND, device
        return Identity.OTHER, device

    async def async_authorize(
        self, identity: DeviceIdentity, token: str | None, *, mqtt: bool = False
    ) -> XiaozhiDevice | None:
        """Return the bound device these credentials belong to, or None.

        `token` is the WebSocket token, or with `mqtt` the MQTT password (a bound pair only:
        a device gets MQTT credentials after its Client-Id is known).
        """
        who, device = self.identify(identity.device_id, identity.client_id)
        if device is None or who is Identity.OTHER or (mqtt and who is not Identity.BOUND):
            return None
        if not _same(token, device.mqtt_password if mqtt else device.token):
            self._async_failed(device)
            return None
        if who is Identity.LEGACY and identity.client_id is not None:
            await self.store.async_set_client_id(device, identity.client_id)
            _LOGGER.info("Device %s: Client-Id recorded (proven by its token)", device.device_id)
        if self._failures.pop(device.device_id, 0) >= MAX_AUTH_FAILURES:
            ir.async_delete_issue(
                self.hass, DOMAIN, device_issue_id(ISSUE_DEVICE_AUTH_FAILING, device.device_id)
            )
        return device

    def is_guess(self, identity: DeviceIdentity, token: str | None) -> bool:
        """Whether a refused channel was a guess (a failed login), not a known device.

        Known: a bound pair with an old token, or a device waiting for its code that presents
        the token its OTA answer gave it. Everything else could have been made up.
        """
        who, _ = self.identify(identity.device_id, identity.client_id)
        if who in (Identity.BOUND, Identity.LEGACY):
            return False
        return not self.activations.holds(identity.device_id, identity.client_id, token)

    @callback
    def _async_failed(self, device: XiaozhiDevice) -> None:
        failures = self._failures[device.device_id] = self._failures.get(device.device_id, 0) + 1
        if failures == MAX_AUTH_FAILURES:
            _async_raise(self.hass, ISSUE_DEVICE_AUTH_FAILING, device)

    @callback
    def async_identity_changed(self, device: XiaozhiDevice) -> None:
        """A bound MAC checked in with another Client-Id: re-flashed (or someone else)."""
        issue = device_issue_id(ISSUE_DEVICE_IDENTITY_CHANGED, device.device_id)
        if ir.async_get(self.hass).async_get_issue(DOMAIN, issue) is not None:
            return
        _LOGGER.warning(
            "Device %s checked in with a new Client-Id; it stays bound to its old one",
            device.device_id,
        )
        _async_raise(self.hass, ISSUE_DEVICE_IDENTITY_CHANGED, device)

    @callback
    def async_forget(self, device_id: str) -> None:
        """A device was removed (or added again): its failures and repairs go with it."""
        self._failures.pop(device_id, None)
        async_delete_device_issues(self.hass, device_id)
