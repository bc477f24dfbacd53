"""Whether the device's battery is charging, from its status tool."""

from __future__ import annotations

from homeassistant.components.binary_sensor import (
    BinarySensorDeviceClass,
    BinarySensorEntity,
    BinarySensorEntityDescription,
)
from homeassistant.const import EntityCategory
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .device_tools import STATUS_TOOL, DeviceTools
from .devices import XiaozhiDevice
from .entity import XiaozhiToolEntity, async_add_tool_entities
from .hub import XiaozhiConfigEntry

PARALLEL_UPDATES = 0


async def async_setup_entry(
    hass: HomeAssistant,
    entry: XiaozhiConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add the charging sensor of each device that reports its battery."""

    def sensors(device: XiaozhiDevice, tools: DeviceTools) -> list[Charging]:
        return [Charging(device, tools)] if Charging.exists_for(device) else []

    async_add_tool_entities(hass, entry, async_add_entities, sensors)


class Charging(XiaozhiToolEntity, BinarySensorEntity):
    """The battery is charging."""

    entity_description = BinarySensorEntityDescription(
        key="battery_charging",
        device_class=BinarySensorDeviceClass.BATTERY_CHARGING,
        entity_category=EntityCategory.DIAGNOSTIC,
    )
    tool = STATUS_TOOL
    status_key = "battery.charging"

    @property
    def is_on(self) -> bool | None:
        """Whether the device said it charges."""
        return self.status_value if isinstance(self.status_value, bool) else None
