"""Config flow: one hub per Home Assistant, no YAML; its options in three steps."""

from __future__ import annotations

import re
from typing import Any

from homeassistant.config_entries import (
    ConfigEntry,
    ConfigFlow,
    ConfigFlowResult,
    ConfigSubentryFlow,
    OptionsFlow,
)
from homeassistant.core import callback
from homeassistant.helpers.selector import (
    EntitySelector,
    EntitySelectorConfig,
    NumberSelector,
    NumberSelectorConfig,
    NumberSelectorMode,
    SelectSelector,
    SelectSelectorConfig,
    TextSelector,
)
import probatio

from .const import (
    AUTH_MODE_ALLOW_LIST,
    AUTH_MODE_BOUND,
    AUTH_MODES,
    CONF_ALLOWED_DEVICES,
    CONF_AUTH_MODE,
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
from .hub import ota_url
from .subentry_flows import ConversationFlow, McpEndpointFlow, SttFlow, TtsFlow

TITLES = {"zh": "小智", "en": "Xiaozhi"}  # the hub's entry title, in HA's language
MAC_PATTERN = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


class XiaozhiConfigFlow(ConfigFlow, domain=DOMAIN):
    """Create the hub and tell the user the OTA URL to put on devices.

    One hub serves every device (`single_config_entry`); devices are added through Repairs,
    with the code they speak (see `activation.py`).
    """

    VERSION = 1

    async def async_step_user(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Confirm, then create the hub."""
        placeholders = {"ota_url": ota_url(self.hass)}
        if user_input is None:
            return self.async_show_form(
                step_id="user",
                data_schema=probatio.Schema({}),
                description_placeholders=placeholders,
            )
        language = "zh" if self.hass.config.language.lower().startswith("zh") else "en"
        return self.async_create_entry(
            title=TITLES[language],
            data={},
            description_placeholders=placeholders,
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
            description_placeholders={"ota_url": ota_url(self.hass)},
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
