"""Activation: unknown devices get a code to speak, and a repair to type it into.

A waiting device is shown in Repairs ("Add <name>"), whose fix flow (`repairs.py`) takes the
code: the hub is a single config entry, and HA aborts any other config flow of its domain,
discovery flows included, once it exists.

Everything here is bounded: codes (and their repairs) expire, there are at most
MAX_PENDING_ACTIVATIONS at once and MAX_PENDING_PER_ADDRESS per address, and unknown devices'
check-ins are counted per address, so a flood of made-up devices cannot grow memory or the list
of discovered devices, nor keep a real device out for long.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
import hmac
import logging
import secrets
import unicodedata

from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import issue_registry as ir
from homeassistant.helpers.event import async_track_time_interval

from .const import (
    ACTIVATION_CODE_DIGITS,
    ACTIVATION_CODE_TTL_S,
    ACTIVATION_SWEEP_INTERVAL_S,
    DOMAIN,
    ISSUE_DEVICE_WAITING,
    MAX_ACTIVATION_ATTEMPTS,
    MAX_BOARD_NAME_CHARS,
    MAX_PENDING_ACTIVATIONS,
    MAX_PENDING_PER_ADDRESS,
    MAX_TRACKED_ADDRESSES,
    MAX_UNKNOWN_CHECKINS,
    UNKNOWN_CHECKIN_WINDOW_S,
)
from .core import OtaRequest
from .core.errors import CheckInRefusedError
from .devices import XiaozhiDevice, device_name
from .issues import async_raise_issue, device_issue_id
from .models import XiaozhiConfigEntry
from .store import DeviceStore, new_token

_LOGGER = logging.getLogger(__name__)

BOARD_NAME_PUNCTUATION = " -_./+#"  # kept in board names; brackets, quotes, markup are not


class ActivationResult(StrEnum):
    """What entering a code did (the values are the flow's translation keys)."""

    ADDED = "device_added"
    INVALID_CODE = "invalid_code"
    CODE_EXPIRED = "code_expired"
    TOO_MANY_ATTEMPTS = "too_many_attempts"


@dataclass
class PendingActivation:
    """A device (MAC + Client-Id) waiting for the user to enter the code it speaks."""

    device_id: str
    client_id: str
    code: str
    challenge: str
    token: str  # in its OTA answer already; opens a channel once the device is bound
    expires: float  # loop time
    address: str | None
    board: str | None
    firmware_version: str | None
    chip_model: str | None


def _new_code() -> str:
    return "".join(secrets.choice("0123456789") for _ in range(ACTIVATION_CODE_DIGITS))


def waiting_issue_id(device_id: str) -> str:
    """The id of the repair that asks for a waiting device's code."""
    return device_issue_id(ISSUE_DEVICE_WAITING, device_id)


def sanitize_name(name: str | None) -> str | None:
    """Return a name a device reported, fit for titles: no controls or markup, short."""
    if not name:
        return None
    kept = "".join(
        c
        for c in name
        if (c.isalnum() or c in BOARD_NAME_PUNCTUATION) and unicodedata.category(c)[0] != "C"
    )
    return " ".join(kept.split())[:MAX_BOARD_NAME_CHARS].strip() or None


class CheckInCounter:
    """Counts unknown devices' OTA checks per address in fixed windows (bounded memory)."""

    def __init__(self) -> None:
        """Start with no address counted."""
        self._windows: OrderedDict[str | None, tuple[float, int]] = OrderedDict()

    def allow(self, address: str | None, now: float) -> bool:
        """Count one check from `address`; False once it is over the limit in this window."""
        start, count = self._windows.pop(address, (now, 0))
        if now - start >= UNKNOWN_CHECKIN_WINDOW_S:
            start, count = now, 0
        self._windows[address] = (start, count + 1)
        if len(self._windows) > MAX_TRACKED_ADDRESSES:
            self._windows.popitem(last=False)
        return count < MAX_UNKNOWN_CHECKINS


class Activations:
    """The devices waiting for their code, and the repairs that ask for it."""

    def __init__(self, hass: HomeAssistant, entry: XiaozhiConfigEntry, store: DeviceStore) -> None:
        """Start with nobody waiting; expired codes are swept while the entry is loaded."""
        self.hass = hass
        self.store = store
        self.pending: dict[tuple[str, str], PendingActivation] = {}
        self._attempts: dict[str, int] = {}  # wrong codes per MAC
        self._asking: set[str] = set()  # MACs whose repair asks for their code
        self._checkins = CheckInCounter()
        entry.async_on_unload(
            async_track_time_interval(
                hass, self._async_sweep, timedelta(seconds=ACTIVATION_SWEEP_INTERVAL_S)
            )
        )
        entry.async_on_unload(self._async_abort_all)

    def _now(self) -> float:
        return self.hass.loop.time()

    @callback
    def async_check_in(self, request: OtaRequest, client_id: str) -> PendingActivation:
        """Return the activation of an unknown device (MAC + Client-Id), starting one if needed.

        A repair asks for the code of a MAC nobody bound; a bound MAC with another Client-Id
        gets a code too (a re-flashed device needs one) but no repair: see `Authorization`.
        """
        now = self._now()
        if not self._checkins.allow(request.remote, now):
            _LOGGER.debug("Too many unknown devices from %s", request.remote)
            raise CheckInRefusedError(429, "too many unknown devices from this address")
        key = (request.device_id, client_id)
        pending = self.pending.get(key)
        if pending is None or pending.expires <= now:
            pending = self._async_start(request, client_id, now)
        if request.device_id not in self.store.devices:
            self._async_ask(pending)
        return pending

    def _async_start(self, request: OtaRequest, client_id: str, now: float) -> PendingActivation:
        self._async_sweep()
        self.pending.pop((request.device_id, client_id), None)
        if len(self.pending) >= MAX_PENDING_ACTIVATIONS:
            _LOGGER.warning(
                "Device %s must wait: %d devices are waiting for their code",
                request.device_id,
                MAX_PENDING_ACTIVATIONS,
            )
            raise CheckInRefusedError(503, "too many devices waiting for activation")
        if (
            sum(1 for p in self.pending.values() if p.address == request.remote)
            >= MAX_PENDING_PER_ADDRESS
        ):
            _LOGGER.warning(
                "Device %s must wait: too many from %s", request.device_id, request.remote
            )
            raise CheckInRefusedError(429, "too many devices waiting from this address")
        pending = self.pending[(request.device_id, client_id)] = PendingActivation(
            device_id=request.device_id,
            client_id=client_id,
            code=_new_code(),
            challenge=secrets.token_hex(16),
            token=new_token(),
            expires=now + ACTIVATION_CODE_TTL_S,
            address=request.remote,
            board=sanitize_name(request.board_type or request.board_name),
            firmware_version=request.firmware_version,
            chip_model=sanitize_name(request.chip_model),
        )
        _LOGGER.info("Device %s (%s) asks to be added", request.device_id, pending.board)
        return pending

    @callback
    def _async_ask(self, pending: PendingActivation) -> None:
        if pending.device_id in self._asking:
            return
        self._asking.add(pending.device_id)
        async_raise_issue(
            self.hass,
            waiting_issue_id(pending.device_id),
            ISSUE_DEVICE_WAITING,
            {"name": device_name(pending.device_id, pending.board), "mac": pending.device_id},
            fix={"device_id": pending.device_id},
        )

    def held(
        self, device_id: str, client_id: str | None, token: str | None
    ) -> PendingActivation | None:
        """The activation of a waiting device presenting the token its answer gave it."""
        pending = self.pending.get((device_id, client_id or ""))
        if (
            pending is None
            or token is None
            or pending.expires <= self._now()
            or not hmac.compare_digest(token.encode(), pending.token.encode())
        ):
            return None
        return pending

    def holds(self, device_id: str, client_id: str | None, token: str | None) -> bool:
        """Whether this is a waiting device presenting the token its answer gave it."""
        return self.held(device_id, client_id, token) is not None

    def waiting(self, device_id: str) -> list[PendingActivation]:
        """The live activations of a MAC (one per Client-Id that asked)."""
        now = self._now()
        return [p for p in self.pending.values() if p.device_id == device_id and p.expires > now]

    def attempts_left(self, device_id: str) -> int:
        """Wrong codes the user may still enter before the code is thrown away."""
        return MAX_ACTIVATION_ATTEMPTS - self._attempts.get(device_id, 0)

    async def async_confirm(self, device_id: str, code: str) -> ActivationResult:
        """Bind the device that speaks `code` (the user typed it); written to disk first."""
        waiting = self.waiting(device_id)
        if not waiting:
            return ActivationResult.CODE_EXPIRED
        match = next(
            (p for p in waiting if hmac.compare_digest(code.strip().encode(), p.code.encode())),
            None,
        )
        if match is None:
            attempts = self._attempts[device_id] = self._attempts.get(device_id, 0) + 1
            _LOGGER.warning("Wrong activation code for %s (%d)", device_id, attempts)
            if attempts < MAX_ACTIVATION_ATTEMPTS:
                return ActivationResult.INVALID_CODE
            for pending in waiting:  # the device hears its new code at its next check
                pending.code, pending.challenge = _new_code(), secrets.token_hex(16)
            self._attempts.pop(device_id)
            return ActivationResult.TOO_MANY_ATTEMPTS
        self._async_drop(device_id)
        self._async_stop_asking(device_id)
        device = await self.store.async_bind(
            device_id,
            match.client_id,
            token=match.token,
            added_by="code",
            board=match.board,
            firmware_version=match.firmware_version,
            chip_model=match.chip_model,
        )
        _LOGGER.info("Device %s (%s) added", device_id, device.board)
        return ActivationResult.ADDED

    @callback
    def async_bound(self, device: XiaozhiDevice) -> None:
        """A device was bound without its code: its activations and repair go."""
        self._async_drop(device.device_id)
        self._async_stop_asking(device.device_id)

    @callback
    def _async_drop(self, device_id: str) -> None:
        for key in [k for k in self.pending if k[0] == device_id]:
            del self.pending[key]
        self._attempts.pop(device_id, None)

    @callback
    def _async_sweep(self, _now: datetime | None = None) -> None:
        """Remove expired codes, and the repairs of devices no longer waiting."""
        now = self._now()
        for key in [k for k, p in self.pending.items() if p.expires <= now]:
            del self.pending[key]
        waiting = {device_id for device_id, _ in self.pending}
        for device_id in self._asking - waiting:
            self._async_stop_asking(device_id)
        for device_id in self._attempts.keys() - waiting:
            del self._attempts[device_id]

    @callback
    def _async_stop_asking(self, device_id: str) -> None:
        self._asking.discard(device_id)
        ir.async_delete_issue(self.hass, DOMAIN, waiting_issue_id(device_id))

    @callback
    def _async_abort_all(self) -> None:
        """The hub unloads: every code is forgotten, so their repairs go too."""
        for device_id in list(self._asking):
            self._async_stop_asking(device_id)
        self.pending.clear()
        self._attempts.clear()
