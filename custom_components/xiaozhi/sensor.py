"""What the device's status tool reports: battery level, Wi-Fi signal, chip temperature."""

from __future__ import annotations

from typing import Any, Final

from homeassistant.components.sensor import (
    SensorDeviceClass,
    SensorEntity,
    SensorEntityDescription,
    SensorStateClass,
)
from homeassistant.const import PERCENTAGE, EntityCategory, UnitOfTemperature
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .device_tools import STATUS_TOOL, DeviceTools
from .devices import XiaozhiDevice
from .entity import XiaozhiToolEntity, async_add_tool_entities
from .hub import XiaozhiConfigEntry

PARALLEL_UPDATES = 0
WIFI_SIGNALS: Final = ["strong", "medium", "weak"]  # the firmware's words for its RSSI
SENSORS: Final = {
    "battery.level": SensorEntityDescription(
        key="battery_level",
        device_class=SensorDeviceClass.BATTERY,
        native_unit_of_measurement=PERCENTAGE,
        state_class=SensorStateClass.MEASUREMENT,
        entity_category=EntityCategory.DIAGNOSTIC,
    ),
    "network.signal": SensorEntityDescription(
        key="wifi_signal",
        translation_key="wifi_signal",
        device_class=SensorDeviceClass.ENUM,
        options=WIFI_SIGNALS,
        entity_category=EntityCategory.DIAGNOSTIC,
    ),
    "chip.temperature": SensorEntityDescription(
        key="chip_temperature",
        translation_key="chip_temperature",
        device_class=SensorDeviceClass.TEMPERATURE,
        native_unit_of_measurement=UnitOfTemperature.CELSIUS,
        state_class=SensorStateClass.MEASUREMENT,
        entity_category=EntityCategory.DIAGNOSTIC,
    ),
}


async def async_setup_entry(
    hass: HomeAssistant,
    entry: XiaozhiConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add a sensor for each value the device's status reports."""

    def sensors(device: XiaozhiDevice, tools: DeviceTools) -> list[StatusSensor]:
        return [
            StatusSensor(device, tools, key, description)
            for key, description in SENSORS.items()
            if STATUS_TOOL in device.tool_names and key in device.status_keys
        ]

    async_add_tool_entities(hass, entry, async_add_entities, sensors)


class StatusSensor(XiaozhiToolEntity, SensorEntity):
    """One value of the device's status."""

    tool = STATUS_TOOL

    def __init__(
        self,
        device: XiaozhiDevice,
        tools: DeviceTools,
        status_key: str,
        description: SensorEntityDescription,
    ) -> None:
        """Show `status_key` of the status."""
        self.entity_description = description
        self.status_key = status_key
        super().__init__(device, tools)

    @property
    def native_value(self) -> Any:
        """The reported value (an unknown Wi-Fi word is no value)."""
        value = self.status_value
        if self.entity_description.device_class is SensorDeviceClass.ENUM:
            return value if value in WIFI_SIGNALS else None
        return value if isinstance(value, int | float) and not isinstance(value, bool) else None
