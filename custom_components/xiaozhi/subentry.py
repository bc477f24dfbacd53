"""Helpers for the hub's cloud AI services (config subentries): adding entities, API client."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

from homeassistant.config_entries import ConfigSubentry
from homeassistant.const import CONF_API_KEY
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers.device_registry import DeviceEntryType, DeviceInfo
from homeassistant.helpers.entity import Entity
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.helpers.httpx_client import get_async_client
import openai

from .const import (
    CONF_BASE_URL,
    CONF_MODEL,
    CONF_PRESET,
    DOMAIN,
    LLM_PRESETS,
    PRESET_CUSTOM,
    LlmPreset,
)
from .hub import XiaozhiConfigEntry
from .llm_client import API_RETRIES


async def async_create_openai_client(
    hass: HomeAssistant, data: Mapping[str, Any]
) -> openai.AsyncOpenAI:
    """A client for an OpenAI-compatible service, on HA's shared HTTP client."""
    client = openai.AsyncOpenAI(
        base_url=data[CONF_BASE_URL],
        api_key=data[CONF_API_KEY],
        max_retries=API_RETRIES,
        # HA's httpx client: the library accepts it at runtime only (typed for httpx2).
        http_client=cast(Any, get_async_client(hass)),
    )
    # The library caches these; the first call reads platform details (blocking).
    await hass.async_add_executor_job(client.platform_headers)
    return client


@callback
def async_add_subentry_entities(
    entry: XiaozhiConfigEntry,
    subentry_type: str,
    async_add_entities: AddConfigEntryEntitiesCallback,
    entities_of: Callable[[ConfigSubentry], Iterable[Entity]],
) -> None:
    """Add a platform's entities for every subentry of a type."""
    for subentry in entry.subentries.values():
        if subentry.subentry_type == subentry_type:
            async_add_entities(entities_of(subentry), config_subentry_id=subentry.subentry_id)


def agent_preset(subentry: ConfigSubentry) -> LlmPreset:
    """The provider preset a conversation agent was made from."""
    return LLM_PRESETS.get(subentry.data.get(CONF_PRESET, ""), LLM_PRESETS[PRESET_CUSTOM])


def agent_device_info(subentry: ConfigSubentry) -> DeviceInfo:
    """The service device of a conversation agent (its entities may come up in any order)."""
    return DeviceInfo(
        identifiers={(DOMAIN, subentry.subentry_id)},
        name=subentry.title,
        manufacturer=agent_preset(subentry).vendor,
        model=subentry.data[CONF_MODEL],
        entry_type=DeviceEntryType.SERVICE,
    )
