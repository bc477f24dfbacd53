"""The device's speaker as a media player: its volume, set through the device's MCP tool.

A media player is what HA's own intents ("set the volume of <device> to 30") act on, so the
built-in agent can change the volume as it does for ESPHome voice satellites.
"""

from __future__ import annotations

from typing import Final

from homeassistant.components.media_player import MediaPlayerEntity, MediaPlayerEntityDescription
from homeassistant.components.media_player.const import (
    MediaPlayerDeviceClass,
    MediaPlayerEntityFeature,
    MediaPlayerState,
)
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .device_tools import DeviceTools
from .devices import XiaozhiDevice
from .entity import XiaozhiToolEntity, async_add_tool_entities
from .hub import XiaozhiConfigEntry

PARALLEL_UPDATES = 1  # one tool call at a time per entity
VOLUME_TOOL: Final = "self.audio_speaker.set_volume"
VOLUME_KEY: Final = "audio_speaker.volume"
MAX_VOLUME: Final = 100  # the tool's range is 0-100


async def async_setup_entry(
    hass: HomeAssistant,
    entry: XiaozhiConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add the speaker of each device that has a volume tool."""

    def speakers(device: XiaozhiDevice, tools: DeviceTools) -> list[XiaozhiSpeaker]:
        return [XiaozhiSpeaker(device, tools)] if XiaozhiSpeaker.exists_for(device) else []

    async_add_tool_entities(hass, entry, async_add_entities, speakers)


class XiaozhiSpeaker(XiaozhiToolEntity, MediaPlayerEntity):
    """The device's speaker: volume set and step."""

    entity_description = MediaPlayerEntityDescription(
        key="speaker", device_class=MediaPlayerDeviceClass.SPEAKER
    )
    _attr_name = None  # the device's own name, as intents say it
    _attr_supported_features = (
        MediaPlayerEntityFeature.VOLUME_SET | MediaPlayerEntityFeature.VOLUME_STEP
    )
    tool = VOLUME_TOOL

    @property
    def state(self) -> MediaPlayerState:
        """On while the device is reachable (it plays what the hub sends it)."""
        return MediaPlayerState.ON

    @property
    def volume_level(self) -> float | None:
        """The volume the device reported, 0..1."""
        volume = self.tools.status.get(VOLUME_KEY)
        return volume / MAX_VOLUME if isinstance(volume, int | float) else None

    async def async_set_volume_level(self, volume: float) -> None:
        """Set the volume on the device."""
        level = max(0, min(MAX_VOLUME, round(volume * MAX_VOLUME)))
        await self.tools.async_call(VOLUME_TOOL, {"volume": level})
        self.tools.async_set_value(VOLUME_KEY, level)
