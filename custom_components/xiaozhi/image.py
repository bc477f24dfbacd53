"""The last photo the device's camera took (uploaded to the vision endpoint)."""

from __future__ import annotations

from datetime import datetime

from homeassistant.components.image import ImageEntity, ImageEntityDescription
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .core.mcp import CAMERA_TOOL
from .device_tools import DeviceTools
from .devices import XiaozhiDevice
from .entity import XiaozhiToolEntity, async_add_tool_entities
from .hub import XiaozhiConfigEntry

PARALLEL_UPDATES = 0
PHOTO_KEY = "last_photo"  # the unique id's suffix; the vision endpoint attaches this entity


async def async_setup_entry(
    hass: HomeAssistant,
    entry: XiaozhiConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add the photo of each device with a camera."""

    def images(device: XiaozhiDevice, tools: DeviceTools) -> list[LastPhoto]:
        return [LastPhoto(hass, device, tools)] if LastPhoto.exists_for(device) else []

    async_add_tool_entities(hass, entry, async_add_entities, images)


class LastPhoto(XiaozhiToolEntity, ImageEntity):
    """The camera's latest photo (kept in memory until HA restarts)."""

    entity_description = ImageEntityDescription(key=PHOTO_KEY, translation_key=PHOTO_KEY)
    _attr_content_type = "image/jpeg"
    tool = CAMERA_TOOL

    def __init__(self, hass: HomeAssistant, device: XiaozhiDevice, tools: DeviceTools) -> None:
        """Create the image entity."""
        XiaozhiToolEntity.__init__(self, device, tools)
        ImageEntity.__init__(self, hass)

    @property
    def available(self) -> bool:
        """A photo stays viewable while the device is away."""
        return self.tools.photo is not None or super().available

    @property
    def image_last_updated(self) -> datetime | None:
        """When the photo was taken."""
        return self.tools.photo_at if self.tools.photo is not None else None

    async def async_image(self) -> bytes | None:
        """The JPEG bytes."""
        return self.tools.photo
