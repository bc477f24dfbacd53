"""The bound devices: who they are (MAC + Client-Id), their tokens, what they told us.

Kept in their own `Store`, written to disk before a device is told it is bound (a config
entry is only saved a second later, and a crash in between would lose the binding the device
already acted on).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
import logging
import secrets
from typing import Any

from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers.dispatcher import async_dispatcher_send
from homeassistant.helpers.storage import Store

from .const import (
    CONF_DEVICES,
    CONF_MQTT_PASSWORD,
    CONF_TOKEN,
    CONF_TRANSPORT,
    DEFAULT_TRANSPORT,
    INFO_SAVE_DELAY_S,
    SIGNAL_NEW_DEVICE,
    STORAGE_KEY,
    STORAGE_VERSION,
    TOKEN_BYTES,
    TRANSPORTS,
)
from .devices import XiaozhiDevice
from .models import XiaozhiConfigEntry

_LOGGER = logging.getLogger(__name__)


def new_token() -> str:
    """Return a fresh device secret."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def _transport(value: Any) -> str:
    return value if value in TRANSPORTS else DEFAULT_TRANSPORT


def _device(device_id: str, info: Mapping[str, Any]) -> XiaozhiDevice:
    return XiaozhiDevice(
        device_id,
        board=info.get("board"),
        firmware_version=info.get("firmware_version"),
        chip_model=info.get("chip_model"),
        token=info.get(CONF_TOKEN),
        client_id=info.get("client_id"),
        added_by=info.get("added_by") or "code",
        vision_token=info.get("vision_token"),
        tool_names=[n for n in info.get("tool_names") or [] if isinstance(n, str)],
        status_keys=[k for k in info.get("status_keys") or [] if isinstance(k, str)],
        transport=_transport(info.get(CONF_TRANSPORT)),
        mqtt_password=info.get(CONF_MQTT_PASSWORD),
    )


class DeviceStore:
    """The hub's bound devices, by MAC."""

    def __init__(self, hass: HomeAssistant, entry: XiaozhiConfigEntry) -> None:
        """Create the store of a hub; `async_load` reads it."""
        self.hass = hass
        self.entry = entry
        self.devices: dict[str, XiaozhiDevice] = {}
        self._store: Store[dict[str, Any]] = Store(
            hass, STORAGE_VERSION, STORAGE_KEY, private=True, atomic_writes=True
        )
        self._writing = asyncio.Lock()  # one binding change on its way to disk at a time

    async def async_load(self) -> None:
        """Read the bound devices; move those an older version kept in the config entry."""
        data = await self._store.async_load() or {}
        stored: dict[str, Any] = dict(data.get(CONF_DEVICES, {}))
        legacy: dict[str, Any] = dict(self.entry.data.get(CONF_DEVICES, {}))
        for device_id, info in legacy.items():
            stored.setdefault(device_id, info)
        self.devices = {
            device_id: _device(device_id, info)
            for device_id, info in stored.items()
            if info.get(CONF_TOKEN)
        }
        if legacy:
            await self._async_save_now()
            self.hass.config_entries.async_update_entry(
                self.entry,
                data={k: v for k, v in self.entry.data.items() if k != CONF_DEVICES},
            )
            _LOGGER.info("Moved %d bound devices to their own store", len(legacy))

    def get(self, device_id: str) -> XiaozhiDevice | None:
        """Return the bound device with this MAC."""
        return self.devices.get(device_id)

    def count_added_by(self, way: str) -> int:
        """Return how many devices were added this way."""
        return sum(1 for device in self.devices.values() if device.added_by == way)

    async def async_bind(
        self, device_id: str, client_id: str | None, *, token: str, added_by: str, **info: Any
    ) -> XiaozhiDevice:
        """Bind a device and write it to disk; only then is it known to the hub."""
        device = _device(device_id, info)
        device.token, device.client_id, device.added_by = token, client_id, added_by
        device.mqtt_password = new_token()
        async with self._writing:
            await self._async_save_now({**self.devices, device_id: device})
            self.devices[device_id] = device
        self._async_register(device)
        async_dispatcher_send(self.hass, SIGNAL_NEW_DEVICE.format(self.entry.entry_id), device)
        return device

    async def async_set_client_id(self, device: XiaozhiDevice, client_id: str) -> None:
        """Record the Client-Id of a device bound before Client-Ids were kept."""
        async with self._writing:
            device.client_id = client_id
            await self._async_save_now()

    async def async_set_transport(self, device: XiaozhiDevice, transport: str) -> None:
        """Switch how the device connects (from its next OTA check); it gets MQTT credentials."""
        async with self._writing:
            device.transport = transport
            if device.mqtt_password is None:  # bound before the always-connected mode
                device.mqtt_password = new_token()
            await self._async_save_now()

    async def async_forget(self, device_id: str) -> XiaozhiDevice | None:
        """Unbind a device for good (its token stops working)."""
        async with self._writing:
            device = self.devices.pop(device_id, None)
            if device is not None:
                await self._async_save_now()
        return device

    @callback
    def async_update_info(
        self,
        device: XiaozhiDevice,
        *,
        board: str | None,
        firmware_version: str | None,
        chip_model: str | None,
    ) -> None:
        """Store what a bound device reports about itself, and show it in the registry."""
        before = device.stored()
        device.board = board or device.board
        device.firmware_version = firmware_version or device.firmware_version
        device.chip_model = chip_model or device.chip_model
        if device.stored() != before:
            self._store.async_delay_save(self._data, INFO_SAVE_DELAY_S)
            self._async_register(device)

    @callback
    def async_save_later(self) -> None:
        """Save what devices told about their tools (not urgent: they tell it again)."""
        self._store.async_delay_save(self._data, INFO_SAVE_DELAY_S)

    @callback
    def _async_register(self, device: XiaozhiDevice) -> None:
        dr.async_get(self.hass).async_get_or_create(
            config_entry_id=self.entry.entry_id, **device.device_info
        )

    def _data(self, devices: Mapping[str, XiaozhiDevice] | None = None) -> dict[str, Any]:
        devices = self.devices if devices is None else devices
        return {CONF_DEVICES: {d.device_id: d.stored() for d in devices.values()}}

    async def _async_save_now(self, devices: Mapping[str, XiaozhiDevice] | None = None) -> None:
        await self._store.async_save(self._data(devices))

    async def async_remove(self) -> None:
        """Delete the store (the hub is deleted)."""
        await self._store.async_remove()
