"""The device's screen brightness, set through its MCP tool."""

from __future__ import annotations

from typing import Final

from homeassistant.components.number import NumberEntity, NumberEntityDescription, NumberMode
from homeassistant.const import PERCENTAGE, EntityCategory
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .device_tools import DeviceTools
from .devices import XiaozhiDevice
from .entity import XiaozhiToolEntity, async_add_tool_entities
from .hub import XiaozhiConfigEntry

PARALLEL_UPDATES = 1
BRIGHTNESS_TOOL: Final = "self.screen.set_brightness"
BRIGHTNESS_KEY: Final = "screen.brightness"


async def async_setup_entry(
    hass: HomeAssistant,
    entry: XiaozhiConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add the brightness of each device with a backlight."""

    def numbers(device: XiaozhiDevice, tools: DeviceTools) -> list[ScreenBrightness]:
        return [ScreenBrightness(device, tools)] if ScreenBrightness.exists_for(device) else []

    async_add_tool_entities(hass, entry, async_add_entities, numbers)


class ScreenBrightness(XiaozhiToolEntity, NumberEntity):
    """The screen's backlight, 0-100 %."""

    entity_description = NumberEntityDescription(
        key="screen_brightness",
        translation_key="screen_brightness",
        native_min_value=0,
        native_max_value=100,
        native_step=1,
        native_unit_of_measurement=PERCENTAGE,
        mode=NumberMode.SLIDER,
        entity_category=EntityCategory.CONFIG,
    )
    tool = BRIGHTNESS_TOOL

    @property
    def native_value(self) -> float | None:
        """The brightness the device reported."""
        value = self.tools.status.get(BRIGHTNESS_KEY)
        return float(value) if isinstance(value, int | float) else None

    async def async_set_native_value(self, value: float) -> None:
        """Set the brightness on the device."""
        await self.tools.async_call(BRIGHTNESS_TOOL, {"brightness": round(value)})
        self.tools.async_set_value(BRIGHTNESS_KEY, round(value))
