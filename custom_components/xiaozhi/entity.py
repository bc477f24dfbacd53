"""Base entity for xiaozhi devices."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers.dispatcher import async_dispatcher_connect
from homeassistant.helpers.entity import Entity
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .const import SIGNAL_NEW_DEVICE, SIGNAL_TOOLS_CHANGED
from .device_tools import DeviceTools
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


@callback
def async_add_tool_entities(
    hass: HomeAssistant,
    entry: XiaozhiConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
    entities_of: Callable[[XiaozhiDevice, DeviceTools], Iterable[XiaozhiToolEntity]],
) -> None:
    """Add the entities of the tools each device has, known or listed later, once each."""
    added: set[str | None] = set()

    @callback
    def add_device(device: XiaozhiDevice) -> None:
        tools = entry.runtime_data.device_tools(device)
        new = [entity for entity in entities_of(device, tools) if entity.unique_id not in added]
        added.update(entity.unique_id for entity in new)
        if new:
            async_add_entities(new)

    for device in entry.runtime_data.devices.values():
        add_device(device)
    for signal in (SIGNAL_NEW_DEVICE, SIGNAL_TOOLS_CHANGED):
        entry.async_on_unload(
            async_dispatcher_connect(hass, signal.format(entry.entry_id), add_device)
        )


class XiaozhiEntity(Entity):
    """An entity of one xiaozhi device: available while the device is bound.

    A WebSocket device opens its channel only during a conversation, so "connected" is not
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


class XiaozhiToolEntity(XiaozhiEntity):
    """An entity backed by one of the device's MCP tools (and a value of its status).

    It exists once the device has listed the tool (the list is kept across restarts), and is
    available while the device is reachable and offers the tool: during a conversation over the
    WebSocket, all the time an always-connected device's MQTT connection is up.
    """

    tool: str  # the MCP tool the entity calls, or whose presence it needs
    status_key: str | None = None  # the value of `self.get_device_status` it shows

    def __init__(self, device: XiaozhiDevice, tools: DeviceTools) -> None:
        """Attach the entity to its device's tools."""
        super().__init__(device)
        self.tools = tools

    @classmethod
    def exists_for(cls, device: XiaozhiDevice) -> bool:
        """Whether the device has (had) the tool, and reports the value if one is needed."""
        return cls.tool in device.tool_names and (
            cls.status_key is None or cls.status_key in device.status_keys
        )

    @property
    def available(self) -> bool:
        """Available while the device is reachable and offers the tool."""
        return self.tools.has(self.tool) and (
            self.status_key is None or self.status_key in self.tools.status
        )

    @property
    def status_value(self) -> Any:
        """The reported value."""
        return self.tools.status.get(self.status_key) if self.status_key else None

    async def async_added_to_hass(self) -> None:
        """Follow the tools and their values too."""
        await super().async_added_to_hass()
        self.async_on_remove(self.tools.async_listen(self.async_write_ha_state))
