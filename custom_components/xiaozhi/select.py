"""Per-device selects: pipeline and VAD sensitivity (as HA's other satellites have), connection."""

from __future__ import annotations

from homeassistant.components.assist_pipeline.select import (
    AssistPipelineSelect,
    VadSensitivitySelect,
)
from homeassistant.components.select import SelectEntity, SelectEntityDescription
from homeassistant.const import EntityCategory
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .const import CONF_TRANSPORT, DOMAIN, TRANSPORTS
from .devices import XiaozhiDevice
from .entity import XiaozhiEntity, async_add_device_entities
from .hub import XiaozhiConfigEntry


async def async_setup_entry(
    hass: HomeAssistant,
    entry: XiaozhiConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add the pipeline, VAD sensitivity and connection selects of each device."""
    async_add_device_entities(
        hass,
        entry,
        async_add_entities,
        lambda device: [
            XiaozhiPipelineSelect(hass, device),
            XiaozhiVadSensitivitySelect(hass, device),
            XiaozhiTransportSelect(entry, device),
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


TRANSPORT = SelectEntityDescription(
    key=CONF_TRANSPORT,
    translation_key=CONF_TRANSPORT,
    entity_category=EntityCategory.CONFIG,
    options=TRANSPORTS,
)


class XiaozhiTransportSelect(XiaozhiEntity, SelectEntity):
    """How the device connects: a WebSocket per conversation, or always connected (MQTT+UDP).

    The device reads it from its OTA check at start; the hub restarts a reachable device that
    is not in a conversation so the change applies at once.
    """

    entity_description = TRANSPORT

    def __init__(self, entry: XiaozhiConfigEntry, device: XiaozhiDevice) -> None:
        """Create the select."""
        super().__init__(device)
        self.entry = entry

    @property
    def available(self) -> bool:
        """Configuration stays editable while the device is away."""
        return True

    @property
    def current_option(self) -> str:
        """The transport the device's next OTA answer gives it."""
        return self.device.transport

    async def async_select_option(self, option: str) -> None:
        """Switch the device's transport."""
        await self.entry.runtime_data.async_set_transport(self.device, option)
        self.async_write_ha_state()
