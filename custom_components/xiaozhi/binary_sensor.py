"""Binary sensors: devices reachable, batteries charging, MCP endpoints and the add-on linked."""

from __future__ import annotations

from homeassistant.components.binary_sensor import (
    BinarySensorEntity,
    BinarySensorEntityDescription,
)
from homeassistant.components.binary_sensor.const import BinarySensorDeviceClass
from homeassistant.config_entries import ConfigSubentry
from homeassistant.const import EntityCategory
from homeassistant.core import HomeAssistant
from homeassistant.helpers.device_registry import DeviceEntryType, DeviceInfo
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .const import DOMAIN, MANUFACTURER, SUBENTRY_MCP_ENDPOINT
from .device_tools import STATUS_TOOL, DeviceTools
from .devices import XiaozhiDevice
from .entity import (
    XiaozhiEntity,
    XiaozhiToolEntity,
    async_add_device_entities,
    async_add_tool_entities,
)
from .hub import XiaozhiConfigEntry
from .mcp_endpoint import EndpointService, async_get_endpoint
from .subentry import XiaozhiServiceEntity, async_add_subentry_entities

PARALLEL_UPDATES = 0
ENDPOINT_MODEL = "MCP endpoint"
ADDON_MODEL = "Add-on"
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
    """Add each device's connectivity (and charging) sensor, and each endpoint's."""

    async def endpoint_sensors(subentry: ConfigSubentry) -> list[EndpointConnectivity]:
        service = async_get_endpoint(hass, entry, subentry.subentry_id)
        return [] if service is None else [EndpointConnectivity(subentry, service)]

    def device_sensors(device: XiaozhiDevice, tools: DeviceTools) -> list[Charging]:
        return [Charging(device, tools)] if Charging.exists_for(device) else []

    await async_add_subentry_entities(
        entry, SUBENTRY_MCP_ENDPOINT, async_add_entities, endpoint_sensors
    )
    async_add_tool_entities(hass, entry, async_add_entities, device_sensors)
    async_add_device_entities(
        hass, entry, async_add_entities, lambda device: [XiaozhiConnectedSensor(device)]
    )
    if entry.runtime_data.uses_addon:
        async_add_entities([AddonLinkSensor(entry)])


class XiaozhiConnectedSensor(XiaozhiEntity, BinarySensorEntity):
    """On while the device can be reached: a conversation's channel, or its MQTT connection."""

    entity_description = CONNECTED

    @property
    def is_on(self) -> bool:
        """Whether a message sent now reaches the device."""
        return self.device.reachable


class EndpointConnectivity(XiaozhiServiceEntity, BinarySensorEntity):
    """Whether HA is connected to the endpoint (named after it, on its service device)."""

    _attr_device_class = BinarySensorDeviceClass.CONNECTIVITY

    def __init__(self, subentry: ConfigSubentry, service: EndpointService) -> None:
        """Follow one endpoint's link."""
        super().__init__(subentry, manufacturer=MANUFACTURER, model=ENDPOINT_MODEL)
        self.service = service

    @property
    def is_on(self) -> bool:
        """Connected now."""
        return self.service.link.connected

    async def async_added_to_hass(self) -> None:
        """Write the state when the link changes."""
        await super().async_added_to_hass()
        self.async_on_remove(self.service.async_listen(self.async_write_ha_state))


class AddonLinkSensor(BinarySensorEntity):
    """Whether HA is linked to the add-on that serves the devices (on the add-on's device)."""

    _attr_has_entity_name = True
    _attr_device_class = BinarySensorDeviceClass.CONNECTIVITY
    _attr_entity_category = EntityCategory.DIAGNOSTIC
    _attr_translation_key = "addon_link"
    _attr_should_poll = False

    def __init__(self, entry: XiaozhiConfigEntry) -> None:
        """Follow the hub's link."""
        self.hub = entry.runtime_data
        self._attr_unique_id = f"{entry.entry_id}-addon_link"
        self._attr_device_info = DeviceInfo(
            identifiers={(DOMAIN, f"{entry.entry_id}-addon")},
            translation_key="addon",
            manufacturer=MANUFACTURER,
            model=ADDON_MODEL,
            entry_type=DeviceEntryType.SERVICE,
        )

    @property
    def is_on(self) -> bool:
        """Linked now."""
        return self.hub.link is not None and self.hub.link.linked

    async def async_added_to_hass(self) -> None:
        """Write the state when the link changes."""
        self.async_on_remove(self.hub.async_listen_link(self.async_write_ha_state))


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
