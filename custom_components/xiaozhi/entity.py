"""Base entity for xiaozhi devices."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers.dispatcher import async_dispatcher_connect
from homeassistant.helpers.entity import Entity
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .const import SIGNAL_NEW_DEVICE
from .devices import XiaozhiDevice
from .hub import XiaozhiConfigEntry


@callback
def async_add_device_entities(
    hass: HomeAssistant,
    entry: XiaozhiConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
    entities_of: Callable[[XiaozhiDevice], Iterable[Entity]],
) -> None:
    """Add a platform's entities for every known device, and for each device seen later."""

    @callback
    def add_device(device: XiaozhiDevice) -> None:
        async_add_entities(entities_of(device))

    for device in entry.runtime_data.devices.values():
        add_device(device)
    entry.async_on_unload(
        async_dispatcher_connect(hass, SIGNAL_NEW_DEVICE.format(entry.entry_id), add_device)
    )


class XiaozhiEntity(Entity):
    """An entity of one xiaozhi device: available while the device is bound.

    A xiaozhi device opens its channel only during a conversation, so "connected" is not
    "available": that is the device's connectivity binary sensor.
    """

    _attr_has_entity_name = True
    _attr_should_poll = False

    def __init__(self, device: XiaozhiDevice) -> None:
        """Attach the entity to its device."""
        self.device = device
        self._attr_unique_id = f"{device.device_id}-{self.entity_description.key}"
        self._attr_device_info = device.device_info

    async def async_added_to_hass(self) -> None:
        """Follow the device's connection."""
        await super().async_added_to_hass()
        self.async_on_remove(self.device.async_listen(self.async_write_ha_state))
