"""Config flow: one hub per Home Assistant, no YAML."""

from __future__ import annotations

import secrets
from typing import Any

from homeassistant.config_entries import (
    ConfigEntry,
    ConfigFlow,
    ConfigFlowResult,
    OptionsFlow,
)
from homeassistant.core import callback
from homeassistant.helpers.network import NoURLAvailableError, get_url
from homeassistant.helpers.selector import (
    NumberSelector,
    NumberSelectorConfig,
    NumberSelectorMode,
)
import probatio

from .const import (
    CONF_SILENCE_TIMEOUT,
    CONF_TOKEN,
    DEFAULT_SILENCE_TIMEOUT_S,
    DOMAIN,
    MAX_SILENCE_TIMEOUT_S,
    MIN_SILENCE_TIMEOUT_S,
    TOKEN_BYTES,
)
from .core import OTA_PATH

PLACEHOLDER_URL = "http://<home-assistant-ip>:8123"


class XiaozhiConfigFlow(ConfigFlow, domain=DOMAIN):
    """Create the hub and tell the user the OTA URL to put on devices."""

    VERSION = 1

    async def async_step_user(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Confirm, then create the hub."""
        placeholders = {"ota_url": self._ota_url()}
        if user_input is None:
            return self.async_show_form(
                step_id="user",
                data_schema=probatio.Schema({}),
                description_placeholders=placeholders,
            )
        return self.async_create_entry(
            title="Xiaozhi",
            data={CONF_TOKEN: secrets.token_urlsafe(TOKEN_BYTES)},
            description_placeholders=placeholders,
        )

    @staticmethod
    @callback
    def async_get_options_flow(config_entry: ConfigEntry) -> XiaozhiOptionsFlow:
        """Return the options flow."""
        return XiaozhiOptionsFlow()

    def _ota_url(self) -> str:
        """Return the OTA URL devices on the LAN should use."""
        try:
            base = get_url(
                self.hass, allow_external=False, allow_cloud=False, prefer_external=False
            )
        except NoURLAvailableError:
            base = PLACEHOLDER_URL
        return base.rstrip("/") + OTA_PATH


class XiaozhiOptionsFlow(OptionsFlow):
    """How conversations behave (read at each turn: no reload, no dropped connections)."""

    async def async_step_init(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Edit the options."""
        if user_input is not None:
            return self.async_create_entry(data=user_input)
        schema = probatio.Schema(
            {
                probatio.Required(
                    CONF_SILENCE_TIMEOUT,
                    default=self.config_entry.options.get(
                        CONF_SILENCE_TIMEOUT, DEFAULT_SILENCE_TIMEOUT_S
                    ),
                ): NumberSelector(
                    NumberSelectorConfig(
                        min=MIN_SILENCE_TIMEOUT_S,
                        max=MAX_SILENCE_TIMEOUT_S,
                        step=1,
                        unit_of_measurement="s",
                        mode=NumberSelectorMode.BOX,
                    )
                )
            }
        )
        return self.async_show_form(step_id="init", data_schema=schema)
