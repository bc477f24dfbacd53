"""Buttons: "Forget memory" of each agent that keeps a memory; "Restart" of each device."""

from __future__ import annotations

from homeassistant.components.button import ButtonEntity, ButtonEntityDescription
from homeassistant.components.button.const import ButtonDeviceClass
from homeassistant.config_entries import ConfigSubentry
from homeassistant.const import EntityCategory, Platform
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .const import CONF_MEMORY, DOMAIN, SUBENTRY_CONVERSATION
from .device_tools import DeviceTools
from .devices import XiaozhiDevice
from .entity import XiaozhiToolEntity, async_add_tool_entities
from .hub import XiaozhiConfigEntry
from .memory import async_get_memory
from .subentry import agent_device_info, async_add_subentry_entities

PARALLEL_UPDATES = 0
FORGET_MEMORY = ButtonEntityDescription(
    key="forget_memory", translation_key="forget_memory", entity_category=EntityCategory.CONFIG
)
REBOOT_TOOL = "self.reboot"  # user-only: never offered to an LLM, but callable


async def async_setup_entry(
    hass: HomeAssistant,
    entry: XiaozhiConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add each memory agent's button (dropped from agents without), each device's restart."""
    registry = er.async_get(hass)
    for subentry in entry.subentries.values():
        if subentry.subentry_type == SUBENTRY_CONVERSATION and not subentry.data.get(CONF_MEMORY):
            unique_id = f"{subentry.subentry_id}-{FORGET_MEMORY.key}"
            if entity_id := registry.async_get_entity_id(Platform.BUTTON, DOMAIN, unique_id):
                registry.async_remove(entity_id)

    async def buttons(subentry: ConfigSubentry) -> list[ForgetMemoryButton]:
        return [ForgetMemoryButton(subentry)] if subentry.data.get(CONF_MEMORY) else []

    await async_add_subentry_entities(entry, SUBENTRY_CONVERSATION, async_add_entities, buttons)

    def reboots(device: XiaozhiDevice, tools: DeviceTools) -> list[RebootButton]:
        return [RebootButton(device, tools)] if RebootButton.exists_for(device) else []

    async_add_tool_entities(hass, entry, async_add_entities, reboots)


class ForgetMemoryButton(ButtonEntity):
    """Clears what the agent remembers of every device."""

    entity_description = FORGET_MEMORY
    _attr_has_entity_name = True

    def __init__(self, subentry: ConfigSubentry) -> None:
        """Create the button on the agent's device."""
        self.subentry = subentry
        self._attr_unique_id = f"{subentry.subentry_id}-{FORGET_MEMORY.key}"
        self._attr_device_info = agent_device_info(subentry)

    async def async_press(self) -> None:
        """Forget."""
        await async_get_memory(self.hass).async_forget(self.subentry.subentry_id)


class RebootButton(XiaozhiToolEntity, ButtonEntity):
    """Restarts the device (its `self.reboot` tool)."""

    entity_description = ButtonEntityDescription(
        key="reboot", device_class=ButtonDeviceClass.RESTART, entity_category=EntityCategory.CONFIG
    )
    tool = REBOOT_TOOL

    async def async_press(self) -> None:
        """Ask the device to restart."""
        await self.tools.async_call(REBOOT_TOOL)
