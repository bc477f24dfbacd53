"""Pipeline and VAD sensitivity selects for each xiaozhi device, as HA's other satellites have."""

from __future__ import annotations

from homeassistant.components.assist_pipeline.select import (
    AssistPipelineSelect,
    VadSensitivitySelect,
)
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .const import DOMAIN
from .devices import XiaozhiDevice
from .entity import XiaozhiEntity, async_add_device_entities
from .hub import XiaozhiConfigEntry


async def async_setup_entry(
    hass: HomeAssistant,
    entry: XiaozhiConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add the pipeline and VAD sensitivity selects of each device."""
    async_add_device_entities(
        hass,
        entry,
        async_add_entities,
        lambda device: [
            XiaozhiPipelineSelect(hass, device),
            XiaozhiVadSensitivitySelect(hass, device),
        ],
    )


class XiaozhiPipelineSelect(XiaozhiEntity, AssistPipelineSelect):
    """Which Assist pipeline the device uses."""

    def __init__(self, hass: HomeAssistant, device: XiaozhiDevice) -> None:
        """Create the select."""
        XiaozhiEntity.__init__(self, device)
        AssistPipelineSelect.__init__(self, hass, DOMAIN, device.device_id)

    @property
    def available(self) -> bool:
        """Configuration stays editable while the device is away."""
        return True


class XiaozhiVadSensitivitySelect(XiaozhiEntity, VadSensitivitySelect):
    """How long a pause ends what the user says."""

    def __init__(self, hass: HomeAssistant, device: XiaozhiDevice) -> None:
        """Create the select."""
        XiaozhiEntity.__init__(self, device)
        VadSensitivitySelect.__init__(self, hass, device.device_id)

    @property
    def available(self) -> bool:
        """Configuration stays editable while the device is away."""
        return True
