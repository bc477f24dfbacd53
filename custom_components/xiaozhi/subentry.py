"""The hub's cloud AI services (config subentries): their entities, devices and API client."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Final, cast

from homeassistant.config_entries import ConfigEntryState, ConfigSubentry
from homeassistant.const import CONF_API_KEY, Platform
from homeassistant.core import HomeAssistant
from homeassistant.helpers.device_registry import DeviceEntryType, DeviceInfo
from homeassistant.helpers.entity import Entity
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.helpers.httpx_client import get_async_client
import openai

from .const import (
    CONF_BASE_URL,
    CONF_MODEL,
    CONF_PRESET,
    CONF_TIMEOUT,
    DEFAULT_SERVICE_TIMEOUT_S,
    DOMAIN,
    LLM_PRESETS,
    PRESET_CUSTOM,
    LlmPreset,
)
from .hub import XiaozhiConfigEntry
from .issues import async_delete_api_key_issue
from .llm_client import API_RETRIES

NO_API_KEY: Final = "none"  # self-hosted OpenAI-compatible servers often take any key


def service_timeout(subentry: ConfigSubentry) -> float:
    """Seconds before a request to the subentry's service is given up."""
    return float(subentry.data.get(CONF_TIMEOUT) or DEFAULT_SERVICE_TIMEOUT_S)


async def async_create_openai_client(
    hass: HomeAssistant, data: Mapping[str, Any]
) -> openai.AsyncOpenAI:
    """A client for an OpenAI-compatible service, on HA's shared HTTP client."""
    client = openai.AsyncOpenAI(
        base_url=data[CONF_BASE_URL],
        api_key=data.get(CONF_API_KEY) or NO_API_KEY,
        max_retries=API_RETRIES,
        # HA's httpx client: the library accepts it at runtime only (typed for httpx2).
        http_client=cast(Any, get_async_client(hass)),
    )
    # The library caches these; the first call reads platform details (blocking).
    await hass.async_add_executor_job(client.platform_headers)
    return client


async def async_add_subentry_entities(
    entry: XiaozhiConfigEntry,
    subentry_type: str,
    async_add_entities: AddConfigEntryEntitiesCallback,
    entities_of: Callable[[ConfigSubentry], Awaitable[Iterable[Entity]]],
) -> None:
    """Add a platform's entities for every subentry of a type."""
    for subentry in entry.subentries.values():
        if subentry.subentry_type == subentry_type:
            entities = await entities_of(subentry)
            async_add_entities(entities, config_subentry_id=subentry.subentry_id)


def agent_preset(subentry: ConfigSubentry) -> LlmPreset:
    """The provider preset a conversation agent was made from."""
    return LLM_PRESETS.get(subentry.data.get(CONF_PRESET, ""), LLM_PRESETS[PRESET_CUSTOM])


def service_device_info(subentry: ConfigSubentry, manufacturer: str, model: str) -> DeviceInfo:
    """The service device of a subentry, named after it (its entities share it)."""
    return DeviceInfo(
        identifiers={(DOMAIN, subentry.subentry_id)},
        name=subentry.title,
        manufacturer=manufacturer,
        model=str(subentry.data.get(CONF_MODEL) or model),
        entry_type=DeviceEntryType.SERVICE,
    )


def agent_device_info(subentry: ConfigSubentry) -> DeviceInfo:
    """The service device of a conversation agent (its entities may come up in any order)."""
    return service_device_info(subentry, agent_preset(subentry).vendor, subentry.data[CONF_MODEL])


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
        self._api_key: str | None = subentry.data.get(CONF_API_KEY)  # what its client was given
        self._attr_unique_id = subentry.subentry_id
        self._attr_device_info = service_device_info(subentry, manufacturer, model)


class SubentryReloader:
    """Reloads the platforms of the subentries that changed; the hub and its devices stay up.

    A changed or removed subentry's rejected-key repair goes too: it was about the old settings.
    """

    def __init__(
        self,
        hass: HomeAssistant,
        entry: XiaozhiConfigEntry,
        platforms: Mapping[str, list[Platform]],
        set_up: list[Platform],
    ) -> None:
        """Remember the subentries the platforms (of those `set_up`) were set up with."""
        self._hass = hass
        self._entry = entry
        self._platforms = {
            kind: [p for p in kind_platforms if p in set_up]
            for kind, kind_platforms in platforms.items()
        }
        self._seen = self._snapshot()

    def _snapshot(self) -> dict[str, tuple[str, str, dict[str, Any]]]:
        return {
            subentry_id: (subentry.subentry_type, subentry.title, dict(subentry.data))
            for subentry_id, subentry in self._entry.subentries.items()
        }

    async def async_reload_changed(self) -> set[str]:
        """Reload the platforms of added, changed and removed subentries; return the removed."""
        previous, self._seen = self._seen, self._snapshot()
        changed = {
            subentry_id
            for subentry_id in previous.keys() | self._seen.keys()
            if previous.get(subentry_id) != self._seen.get(subentry_id)
        }
        for subentry_id in changed:
            async_delete_api_key_issue(self._hass, subentry_id)
        types = {(previous.get(i) or self._seen[i])[0] for i in changed}
        platforms = {p for kind in types for p in self._platforms.get(kind, [])}
        if platforms:
            config_entries = self._hass.config_entries
            async with self._entry.setup_lock:
                if self._entry.state is not ConfigEntryState.LOADED:
                    return set()  # unloaded meanwhile: the next setup starts afresh
                await config_entries.async_unload_platforms(self._entry, platforms)
                await config_entries.async_forward_entry_setups(self._entry, platforms)
        return previous.keys() - self._seen.keys()
