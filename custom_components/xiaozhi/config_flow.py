"""Config flow: one hub per Home Assistant, no YAML; its options in three steps."""

from __future__ import annotations

import re
from typing import Any

import aiohttp
from homeassistant.config_entries import (
    ConfigEntry,
    ConfigFlow,
    ConfigFlowResult,
    ConfigSubentryFlow,
    OptionsFlow,
)
from homeassistant.core import callback
from homeassistant.helpers.aiohttp_client import async_get_clientsession
from homeassistant.helpers.selector import (
    EntitySelector,
    EntitySelectorConfig,
    NumberSelector,
    NumberSelectorConfig,
    NumberSelectorMode,
    SelectSelector,
    SelectSelectorConfig,
    TextSelector,
    TextSelectorConfig,
    TextSelectorType,
)
from homeassistant.helpers.service_info.hassio import HassioServiceInfo
import probatio

from .const import (
    AUTH_MODE_ALLOW_LIST,
    AUTH_MODE_BOUND,
    AUTH_MODES,
    CONF_ADDON_URL,
    CONF_ALLOWED_DEVICES,
    CONF_AUTH_MODE,
    CONF_LINK_SECRET,
    CONF_MQTT_PORT,
    CONF_SILENCE_TIMEOUT,
    CONF_UDP_PORT,
    CONF_VISION_ENTITY,
    DEFAULT_SILENCE_TIMEOUT_S,
    DOMAIN,
    MAX_PORT,
    MAX_SILENCE_TIMEOUT_S,
    MIN_PORT,
    MIN_SILENCE_TIMEOUT_S,
    SUBENTRY_CONVERSATION,
    SUBENTRY_MCP_ENDPOINT,
    SUBENTRY_STT,
    SUBENTRY_TTS,
    TLS_MQTT_PORT,
)
from .core.const import DEFAULT_MQTT_PORT, DEFAULT_UDP_PORT
from .core.remote import LinkAuthError, check_link
from .hub import ota_url
from .subentry_flows import ConversationFlow, McpEndpointFlow, SttFlow, TtsFlow

TITLES = {"zh": "小智", "en": "Xiaozhi"}  # the hub's entry title, in HA's language
MAC_PATTERN = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
# Empty: HA serves the devices itself. Set: the add-on (or its container) at this URL does.
_LINK_SCHEMA = probatio.Schema(
    {
        probatio.Optional(CONF_ADDON_URL): TextSelector(
            TextSelectorConfig(type=TextSelectorType.URL)
        ),
        probatio.Optional(CONF_LINK_SECRET): TextSelector(
            TextSelectorConfig(type=TextSelectorType.PASSWORD)
        ),
    }
)


class XiaozhiConfigFlow(ConfigFlow, domain=DOMAIN):
    """Create the hub and tell the user the OTA URL to put on devices.

    One hub serves every device (`single_config_entry`); devices are added through Repairs,
    with the code they speak (see `activation.py`).
    """

    VERSION = 1

    def __init__(self) -> None:
        """Start with no add-on discovered."""
        self._discovered: dict[str, str] = {}
        self._addon_name = ""

    async def async_step_user(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Create the hub: serving devices itself, or linked to the add-on at a URL."""
        errors: dict[str, str] = {}
        if user_input is not None:
            addon_url = user_input.get(CONF_ADDON_URL, "").strip()
            if not addon_url:
                return self._create({})
            link = {
                CONF_ADDON_URL: addon_url,
                CONF_LINK_SECRET: user_input.get(CONF_LINK_SECRET, ""),
            }
            if (error := await self._check_link(link)) is None:
                return self._create(link)
            errors["base"] = error
        return self.async_show_form(
            step_id="user",
            data_schema=self.add_suggested_values_to_schema(_LINK_SCHEMA, user_input or {}),
            errors=errors,
            description_placeholders={"ota_url": ota_url(self.hass)},
        )

    async def async_step_hassio(self, discovery_info: HassioServiceInfo) -> ConfigFlowResult:
        """The add-on announced itself through the Supervisor."""
        config = discovery_info.config
        self._discovered = {
            CONF_ADDON_URL: f"http://{config['host']}:{config['port']}",
            CONF_LINK_SECRET: str(config["secret"]),
        }
        self._addon_name = discovery_info.name
        self.context["title_placeholders"] = {"name": discovery_info.name}
        return await self.async_step_hassio_confirm()

    async def async_step_hassio_confirm(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Confirm linking to the discovered add-on."""
        errors: dict[str, str] = {}
        if user_input is not None:
            if (error := await self._check_link(self._discovered)) is None:
                return self._create(self._discovered)
            errors["base"] = error
        return self.async_show_form(
            step_id="hassio_confirm",
            errors=errors,
            description_placeholders={
                "addon": self._addon_name,
                "ota_url": ota_url(self.hass, self._discovered[CONF_ADDON_URL]),
            },
        )

    async def async_step_reconfigure(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Link the hub to the add-on, change its address, or serve devices from HA again."""
        entry = self._get_reconfigure_entry()
        errors: dict[str, str] = {}
        if user_input is not None:
            link = _link_of(user_input)
            if not link or (error := await self._check_link(link)) is None:
                return self.async_update_reload_and_abort(entry, data=link)
            errors["base"] = error
        return self.async_show_form(
            step_id="reconfigure",
            data_schema=self.add_suggested_values_to_schema(
                _LINK_SCHEMA, user_input or dict(entry.data)
            ),
            errors=errors,
        )

    async def _check_link(self, link: dict[str, str]) -> str | None:
        """Check the add-on's URL and secret; return the form error, if any."""
        try:
            await check_link(
                async_get_clientsession(self.hass), link[CONF_ADDON_URL], link[CONF_LINK_SECRET]
            )
        except LinkAuthError:
            return "invalid_auth"
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
            return "cannot_connect"
        return None

    def _create(self, data: dict[str, str]) -> ConfigFlowResult:
        language = "zh" if self.hass.config.language.lower().startswith("zh") else "en"
        return self.async_create_entry(
            title=TITLES[language],
            data=data,
            description_placeholders={"ota_url": ota_url(self.hass, data.get(CONF_ADDON_URL))},
        )

    @classmethod
    @callback
    def async_get_supported_subentry_types(
        cls, config_entry: ConfigEntry
    ) -> dict[str, type[ConfigSubentryFlow]]:
        """Cloud AI services the hub can offer to Assist pipelines."""
        return {
            SUBENTRY_CONVERSATION: ConversationFlow,
            SUBENTRY_STT: SttFlow,
            SUBENTRY_TTS: TtsFlow,
            SUBENTRY_MCP_ENDPOINT: McpEndpointFlow,
        }

    @staticmethod
    @callback
    def async_get_options_flow(config_entry: ConfigEntry) -> XiaozhiOptionsFlow:
        """Return the options flow."""
        return XiaozhiOptionsFlow()


def _link_of(user_input: dict[str, Any]) -> dict[str, str]:
    """The hub's data from the form: the add-on's URL and secret, or nothing (HA serves)."""
    if not (addon_url := str(user_input.get(CONF_ADDON_URL, "")).strip()):
        return {}
    return {CONF_ADDON_URL: addon_url, CONF_LINK_SECRET: str(user_input.get(CONF_LINK_SECRET, ""))}


def invalid_macs(text: str) -> list[str]:
    """The entries of an allow list that are not MAC addresses."""
    return [
        item
        for item in text.replace(",", " ").split()
        if not MAC_PATTERN.match(item.lower().replace("-", ":"))
    ]


class XiaozhiOptionsFlow(OptionsFlow):
    """Conversations, who may add a device, always-connected ports; each read when used.

    Changed ports reopen the always-connected listeners (their devices reconnect by themselves).
    """

    async def async_step_init(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Choose what to change; the OTA URL devices need is shown here."""
        return self.async_show_menu(
            step_id="init",
            menu_options=["conversation", "security", "connection"],
            description_placeholders={"ota_url": self.config_entry.runtime_data.ota_url},
        )

    async def async_step_conversation(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """How long silence may last before a conversation ends; who answers the camera."""
        if user_input is not None:
            return self._save(user_input)
        schema = probatio.Schema(
            {
                probatio.Required(CONF_SILENCE_TIMEOUT): NumberSelector(
                    NumberSelectorConfig(
                        min=MIN_SILENCE_TIMEOUT_S,
                        max=MAX_SILENCE_TIMEOUT_S,
                        step=1,
                        unit_of_measurement="s",
                        mode=NumberSelectorMode.BOX,
                    )
                ),
                probatio.Optional(CONF_VISION_ENTITY): EntitySelector(
                    EntitySelectorConfig(domain="ai_task")
                ),
            }
        )
        return self.async_show_form(
            step_id="conversation",
            data_schema=self.add_suggested_values_to_schema(
                schema,
                {
                    CONF_SILENCE_TIMEOUT: DEFAULT_SILENCE_TIMEOUT_S,
                    **self.config_entry.options,
                },
            ),
        )

    async def async_step_security(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Who may be added without an activation code; the allow list must be MACs."""
        errors: dict[str, str] = {}
        placeholders = {"invalid": ""}
        if user_input is not None:
            listed = user_input.get(CONF_ALLOWED_DEVICES, "")
            if bad := invalid_macs(listed):
                errors[CONF_ALLOWED_DEVICES] = "invalid_mac"
                placeholders["invalid"] = ", ".join(bad)
            elif user_input[CONF_AUTH_MODE] == AUTH_MODE_ALLOW_LIST and not listed.strip():
                errors[CONF_ALLOWED_DEVICES] = "allow_list_empty"
            else:
                user_input.setdefault(CONF_ALLOWED_DEVICES, "")
                return self._save(user_input)
        schema = probatio.Schema(
            {
                probatio.Required(CONF_AUTH_MODE): SelectSelector(
                    SelectSelectorConfig(options=AUTH_MODES, translation_key=CONF_AUTH_MODE)
                ),
                probatio.Optional(CONF_ALLOWED_DEVICES): TextSelector(),
            }
        )
        return self.async_show_form(
            step_id="security",
            data_schema=self.add_suggested_values_to_schema(
                schema,
                {
                    CONF_AUTH_MODE: AUTH_MODE_BOUND,
                    **self.config_entry.options,
                    **(user_input or {}),
                },
            ),
            errors=errors,
            description_placeholders=placeholders,
        )

    async def async_step_connection(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """The ports of the always-connected (MQTT+UDP) transport; 8883 means TLS to devices."""
        errors: dict[str, str] = {}
        if user_input is not None:
            if int(user_input[CONF_MQTT_PORT]) == TLS_MQTT_PORT:
                errors[CONF_MQTT_PORT] = "tls_port"
            else:
                return self._save(user_input)
        port = NumberSelector(
            NumberSelectorConfig(min=MIN_PORT, max=MAX_PORT, step=1, mode=NumberSelectorMode.BOX)
        )
        schema = probatio.Schema(
            {probatio.Required(CONF_MQTT_PORT): port, probatio.Required(CONF_UDP_PORT): port}
        )
        return self.async_show_form(
            step_id="connection",
            data_schema=self.add_suggested_values_to_schema(
                schema,
                {
                    CONF_MQTT_PORT: DEFAULT_MQTT_PORT,
                    CONF_UDP_PORT: DEFAULT_UDP_PORT,
                    **self.config_entry.options,
                    **(user_input or {}),
                },
            ),
            errors=errors,
        )

    def _save(self, user_input: dict[str, Any]) -> ConfigFlowResult:
        return self.async_create_entry(data={**self.config_entry.options, **user_input})
