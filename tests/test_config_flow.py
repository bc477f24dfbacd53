"""Tests for the config flow."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from homeassistant import config_entries
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.loader import async_get_integration
import pytest

from custom_components.xiaozhi.const import DOMAIN

TRANSLATIONS = Path(__file__).parent.parent / "custom_components" / DOMAIN / "translations"


@pytest.mark.usefixtures("ha_core")
async def test_user_flow_creates_hub_and_shows_ota_url(hass: HomeAssistant) -> None:
    await hass.config.async_update(internal_url="http://192.168.1.10:8123")
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": config_entries.SOURCE_USER}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["description_placeholders"] == {
        "ota_url": "http://192.168.1.10:8123/xiaozhi/ota/"
    }

    result = await hass.config_entries.flow.async_configure(result["flow_id"], {})
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["description_placeholders"] == {
        "ota_url": "http://192.168.1.10:8123/xiaozhi/ota/"
    }
    entry = hass.config_entries.async_entries(DOMAIN)[0]
    assert entry.state is config_entries.ConfigEntryState.LOADED


@pytest.mark.usefixtures("ha_core")
async def test_only_one_hub(hass: HomeAssistant) -> None:
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": config_entries.SOURCE_USER}
    )
    await hass.config_entries.flow.async_configure(result["flow_id"], {})
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": config_entries.SOURCE_USER}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "single_instance_allowed"


@pytest.mark.usefixtures("ha_core")
async def test_the_hub_is_a_single_config_entry(hass: HomeAssistant) -> None:
    """HA itself hides "Add hub" once it exists (no dead-end button)."""
    integration = await async_get_integration(hass, DOMAIN)
    assert integration.single_config_entry


@pytest.mark.usefixtures("ha_core")
async def test_a_chinese_ha_finds_and_names_it_in_chinese(hass: HomeAssistant) -> None:
    # The Add integration dialog searches the manifest's name (and the domain).
    integration = await async_get_integration(hass, DOMAIN)
    assert "小智" in integration.name
    zh = json.loads((TRANSLATIONS / "zh-Hans.json").read_text(encoding="utf-8"))
    assert zh["title"] == "小智"
    await hass.config.async_update(language="zh-Hans")
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": config_entries.SOURCE_USER}
    )
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {})
    assert result["title"] == "小智"


def _keys(tree: dict[str, Any], prefix: str = "") -> set[str]:
    keys = set()
    for key, value in tree.items():
        keys |= _keys(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key}
    return keys


def test_translations_match_strings() -> None:
    strings = json.loads((TRANSLATIONS.parent / "strings.json").read_text(encoding="utf-8"))
    for name in ("en.json", "zh-Hans.json"):
        translation = json.loads((TRANSLATIONS / name).read_text(encoding="utf-8"))
        assert _keys(translation) == _keys(strings), name


async def test_options_show_the_ota_url_and_check_the_allow_list(
    hass: HomeAssistant, ota_url: str
) -> None:
    entry = hass.config_entries.async_entries(DOMAIN)[0]
    result = await hass.config_entries.options.async_init(entry.entry_id)
    assert result["type"] is FlowResultType.MENU
    assert result["menu_options"] == ["conversation", "security", "connection"]
    assert result["description_placeholders"]["ota_url"].endswith("/xiaozhi/ota/")
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"next_step_id": "security"}
    )
    result = await hass.config_entries.options.async_configure(
        result["flow_id"],
        {"auth_mode": "allow_list", "allowed_devices": "kitchen speaker, 11:22:33"},
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"allowed_devices": "invalid_mac"}
    assert result["description_placeholders"]["invalid"] == "kitchen, speaker, 11:22:33"
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"auth_mode": "allow_list", "allowed_devices": ""}
    )
    assert result["errors"] == {"allowed_devices": "allow_list_empty"}
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"auth_mode": "allow_list", "allowed_devices": "AA-BB-CC-DD-EE-01"}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert entry.options["allowed_devices"] == "AA-BB-CC-DD-EE-01"


async def test_options_refuse_the_tls_port_for_always_connected_devices(
    hass: HomeAssistant, ota_url: str
) -> None:
    entry = hass.config_entries.async_entries(DOMAIN)[0]
    result = await hass.config_entries.options.async_init(entry.entry_id)
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"next_step_id": "connection"}
    )
    assert result["step_id"] == "connection"
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"mqtt_port": 8883, "udp_port": 8885}
    )
    assert result["errors"] == {"mqtt_port": "tls_port"}
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"mqtt_port": 18885, "udp_port": 18886}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert (entry.options["mqtt_port"], entry.options["udp_port"]) == (18885, 18886)


async def test_options_set_the_silence_timeout_and_who_explains_photos(
    hass: HomeAssistant, ota_url: str
) -> None:
    entry = hass.config_entries.async_entries(DOMAIN)[0]
    result = await hass.config_entries.options.async_init(entry.entry_id)
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"next_step_id": "conversation"}
    )
    assert result["step_id"] == "conversation"
    suggested = {str(key): key.description for key in result["data_schema"].schema}
    assert suggested["silence_timeout"] == {"suggested_value": 8}  # the default
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"silence_timeout": 20, "vision_entity": "ai_task.photos"}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert entry.options["silence_timeout"] == 20
    assert entry.options["vision_entity"] == "ai_task.photos"

    # The form shows what is saved; other options are kept.
    result = await hass.config_entries.options.async_init(entry.entry_id)
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"next_step_id": "security"}
    )
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"auth_mode": "bound"}
    )
    assert entry.options["silence_timeout"] == 20
    assert entry.options["allowed_devices"] == ""
    result = await hass.config_entries.options.async_init(entry.entry_id)
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"next_step_id": "conversation"}
    )
    suggested = {str(key): key.description for key in result["data_schema"].schema}
    assert suggested["silence_timeout"] == {"suggested_value": 20}
    assert suggested["vision_entity"] == {"suggested_value": "ai_task.photos"}
