"""A notify entity per device: HA notifications shown on the device as the firmware's `alert`."""

from __future__ import annotations

from homeassistant.components.notify import NotifyEntity, NotifyEntityDescription
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .core.messages import Alert
from .entity import XiaozhiEntity, async_add_device_entities
from .hub import XiaozhiConfigEntry

PARALLEL_UPDATES = 0
ALERT_STATUS = "Home Assistant"  # the status line, when the notification has no title
ALERT_EMOTION = "neutral"
ALERT = NotifyEntityDescription(key="alert", translation_key="alert")


async def async_setup_entry(
    hass: HomeAssistant,
    entry: XiaozhiConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add the notify entity of each device."""
    async_add_device_entities(hass, entry, async_add_entities, lambda d: [XiaozhiNotify(d)])


class XiaozhiNotify(XiaozhiEntity, NotifyEntity):
    """Shows a message on the device's screen with its alert sound (title as the status line).

    Available while a message can reach the device: always, for an always-connected device;
    during conversations only, for one on the WebSocket.
    """

    entity_description = ALERT

    @property
    def available(self) -> bool:
        """Available while the device is reachable."""
        return self.device.reachable

    async def async_send_message(self, message: str, title: str | None = None) -> None:
        """Send the alert."""
        await self.device.async_send(
            Alert(status=title or ALERT_STATUS, message=message, emotion=ALERT_EMOTION)
        )
