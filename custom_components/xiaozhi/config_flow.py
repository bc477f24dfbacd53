"""Config flow: one hub per Home Assistant, no YAML."""

from __future__ import annotations

import secrets
from typing import Any

from homeassistant.config_entries import ConfigFlow, ConfigFlowResult
from homeassistant.helpers.network import NoURLAvailableError, get_url
import probatio

from .const import CONF_TOKEN, DOMAIN, TOKEN_BYTES
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

    def _ota_url(self) -> str:
        """Return the OTA URL devices on the LAN should use."""
        try:
            base = get_url(
                self.hass, allow_external=False, allow_cloud=False, prefer_external=False
            )
        except NoURLAvailableError:
            base = PLACEHOLDER_URL
        return base.rstrip("/") + OTA_PATH
