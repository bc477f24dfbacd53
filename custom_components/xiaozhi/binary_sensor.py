"""Whether each xiaozhi device has its channel open right now (it does only while talking)."""

from __future__ import annotations

from homeassistant.components.binary_sensor import (
    BinarySensorDeviceClass,
    BinarySensorEntity,
    BinarySensorEntityDescription,
)
from homeassistant.const import EntityCategory
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .entity import XiaozhiEntity, async_add_device_entities
from .hub import XiaozhiConfigEntry

PARALLEL_UPDATES = 0
CONNECTED = BinarySensorEntityDescription(
    key="connected",
    device_class=BinarySensorDeviceClass.CONNECTIVITY,
    entity_category=EntityCategory.DIAGNOSTIC,
)


async def async_setup_entry(
    hass: HomeAssistant,
    entry: XiaozhiConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add the connectivity sensor of each device."""
    async_add_device_entities(
        hass, entry, async_add_entities, lambda device: [XiaozhiConnectedSensor(device)]
    )


class XiaozhiConnectedSensor(XiaozhiEntity, BinarySensorEntity):
    """On while the device has a channel open."""

    entity_description = CONNECTED

    @property
    def is_on(self) -> bool:
        """Whether the device is connected."""
        return self.device.connected
