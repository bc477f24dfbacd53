"""Linking the hub to the add-on: the Supervisor's discovery, the URL form, and reconfiguring."""

from __future__ import annotations

from homeassistant.config_entries import SOURCE_HASSIO, SOURCE_USER
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers import entity_registry as er, issue_registry as ir
from homeassistant.helpers.service_info.hassio import HassioServiceInfo
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.xiaozhi.const import CONF_ADDON_URL, CONF_LINK_SECRET, DOMAIN
from custom_components.xiaozhi.hub import ota_url

from .addon import SECRET, AddonHost, addon_url, free_port, wait_until


def discovery(addon: AddonHost, secret: str = SECRET) -> HassioServiceInfo:
    """What the Supervisor hands HA when the add-on announces itself."""
    return HassioServiceInfo(
        config={"host": "127.0.0.1", "port": addon.http_port, "secret": secret},
        name="Xiaozhi",
        slug="local_xiaozhi",
        uuid="0123456789abcdef",
    )


async def test_discovered_addon_is_linked_after_confirming(
    hass: HomeAssistant, ha_core: None, addon: AddonHost
) -> None:
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_HASSIO}, data=discovery(addon)
    )
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "hassio_confirm"
    assert result["description_placeholders"]["addon"] == "Xiaozhi"
    assert result["description_placeholders"]["ota_url"] == f"{addon_url(addon)}/xiaozhi/ota/"
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {})
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"] == {CONF_ADDON_URL: addon_url(addon), CONF_LINK_SECRET: SECRET}
    await hass.async_block_till_done()
    await wait_until(lambda: addon.gate.linked)
    entry = hass.config_entries.async_entries(DOMAIN)[0]
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_discovery_with_a_stale_secret_says_so(
    hass: HomeAssistant, ha_core: None, addon: AddonHost
) -> None:
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_HASSIO}, data=discovery(addon, "old")
    )
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {})
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "invalid_auth"}


async def test_user_form_checks_the_addon_url_and_secret(
    hass: HomeAssistant, ha_core: None, addon: AddonHost
) -> None:
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    nothing_there = f"http://127.0.0.1:{free_port()}"
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_ADDON_URL: nothing_there, CONF_LINK_SECRET: SECRET}
    )
    assert result["errors"] == {"base": "cannot_connect"}
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_ADDON_URL: addon_url(addon), CONF_LINK_SECRET: "guess"}
    )
    assert result["errors"] == {"base": "invalid_auth"}
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_ADDON_URL: f" {addon_url(addon)} ", CONF_LINK_SECRET: SECRET}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"][CONF_ADDON_URL] == addon_url(addon)
    assert result["description_placeholders"]["ota_url"] == f"{addon_url(addon)}/xiaozhi/ota/"
    await hass.async_block_till_done()
    await wait_until(lambda: addon.gate.linked)
    entry = hass.config_entries.async_entries(DOMAIN)[0]
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_reconfigure_moves_the_hub_to_the_addon_and_back(
    hass: HomeAssistant, ha_core: None, addon: AddonHost
) -> None:
    entry = MockConfigEntry(domain=DOMAIN, title="Xiaozhi", data={})
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    assert entry.runtime_data.link is None

    result = await entry.start_reconfigure_flow(hass)
    assert result["step_id"] == "reconfigure"
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_ADDON_URL: addon_url(addon), CONF_LINK_SECRET: "guess"}
    )
    assert result["errors"] == {"base": "invalid_auth"}
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_ADDON_URL: addon_url(addon), CONF_LINK_SECRET: SECRET}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    await hass.async_block_till_done()
    assert entry.data == {CONF_ADDON_URL: addon_url(addon), CONF_LINK_SECRET: SECRET}
    await wait_until(lambda: addon.gate.linked)

    result = await entry.start_reconfigure_flow(hass)
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {})
    assert result["reason"] == "reconfigure_successful"
    await hass.async_block_till_done()
    assert entry.data == {}
    assert entry.runtime_data.link is None
    await wait_until(lambda: not addon.gate.linked)
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_ota_url_of_an_addon_by_container_name_is_on_has_host(hass: HomeAssistant) -> None:
    await hass.config.async_update(internal_url="http://192.168.1.20:8123")
    # HA OS: the add-on is reached by its container name; devices use HA's host, its port.
    assert ota_url(hass, "http://local-xiaozhi:8003") == "http://192.168.1.20:8003/xiaozhi/ota/"
    assert ota_url(hass, "http://192.168.1.30:8003") == "http://192.168.1.30:8003/xiaozhi/ota/"
    assert ota_url(hass) == "http://192.168.1.20:8123/xiaozhi/ota/"


async def test_a_refused_secret_is_a_repair_and_the_link_a_sensor(
    hass: HomeAssistant, ha_core: None, addon: AddonHost
) -> None:
    entry = MockConfigEntry(
        domain=DOMAIN,
        title="Xiaozhi",
        data={CONF_ADDON_URL: addon_url(addon), CONF_LINK_SECRET: "stale"},
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    issues = ir.async_get(hass)
    await wait_until(lambda: issues.async_get_issue(DOMAIN, "addon_secret_refused") is not None)
    link = er.async_get(hass).async_get_entity_id(
        "binary_sensor", DOMAIN, f"{entry.entry_id}-addon_link"
    )
    assert link is not None
    assert hass.states.get(link).state == "off"

    result = await entry.start_reconfigure_flow(hass)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_ADDON_URL: addon_url(addon), CONF_LINK_SECRET: SECRET}
    )
    assert result["reason"] == "reconfigure_successful"
    await hass.async_block_till_done()
    await wait_until(lambda: addon.gate.linked)
    assert issues.async_get_issue(DOMAIN, "addon_secret_refused") is None
    await wait_until(lambda: hass.states.get(link).state == "on")

    # The add-on stops (an update): the sensor says so; HA keeps retrying.
    await addon.stop()
    await wait_until(lambda: hass.states.get(link).state == "off")
    assert await hass.config_entries.async_unload(entry.entry_id)
