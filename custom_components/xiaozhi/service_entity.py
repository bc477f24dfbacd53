"""Base entity for a cloud service configured as a subentry of the hub (STT, TTS)."""

from __future__ import annotations

from homeassistant.config_entries import ConfigSubentry
from homeassistant.helpers.device_registry import DeviceEntryType, DeviceInfo
from homeassistant.helpers.entity import Entity

from .const import CONF_MODEL, CONF_TIMEOUT, DEFAULT_SERVICE_TIMEOUT_S, DOMAIN


def service_timeout(subentry: ConfigSubentry) -> float:
    """Seconds before a request to the subentry's service is given up."""
    return float(subentry.data.get(CONF_TIMEOUT) or DEFAULT_SERVICE_TIMEOUT_S)


class XiaozhiServiceEntity(Entity):
    """One subentry's entity, on a service device named after the subentry.

    The entity is the device's main feature, so it takes the device's name; TTS entities set
    their own name instead (HA's TTS manager refuses an engine whose name is None).
    """

    _attr_has_entity_name = True
    _attr_name: str | None = None
    _attr_should_poll = False

    def __init__(self, subentry: ConfigSubentry, *, manufacturer: str, model: str) -> None:
        """Name the entity and its device after the subentry."""
        self.subentry = subentry
        self._attr_unique_id = subentry.subentry_id
        self._attr_device_info = DeviceInfo(
            identifiers={(DOMAIN, subentry.subentry_id)},
            name=subentry.title,
            manufacturer=manufacturer,
            model=str(subentry.data.get(CONF_MODEL) or model),
            entry_type=DeviceEntryType.SERVICE,
        )
