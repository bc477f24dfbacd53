"""Config flow: one hub per Home Assistant, no YAML."""

from __future__ import annotations

from typing import Any

from homeassistant.config_entries import (
    ConfigEntry,
    ConfigFlow,
    ConfigFlowResult,
    ConfigSubentryFlow,
    OptionsFlow,
)
from homeassistant.core import callback
from homeassistant.helpers.network import NoURLAvailableError, get_url
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

from .activation import ActivationResult, flow_unique_id
from .const import (
    AUTH_MODE_BOUND,
    AUTH_MODES,
    CONF_ALLOWED_DEVICES,
    CONF_AUTH_MODE,
    CONF_CODE,
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
from .core import OTA_PATH
from .core.const import DEFAULT_MQTT_PORT, DEFAULT_UDP_PORT
from .hub import async_get_hub
from .subentry_flows import ConversationFlow, McpEndpointFlow, SttFlow, TtsFlow

PLACEHOLDER_URL = "http://<home-assistant-ip>:8123"


class XiaozhiConfigFlow(ConfigFlow, domain=DOMAIN):
    """Create the hub and tell the user the OTA URL to put on devices."""

    VERSION = 1

    _device_id: str = ""

    async def async_step_user(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Confirm, then create the hub (one serves every device).

        One hub per HA is checked here: the manifest's `single_config_entry` would also abort
        every device's discovery flow once the hub exists.
        """
        if self._async_current_entries():
            return self.async_abort(reason="single_instance_allowed")
        placeholders = {"ota_url": self._ota_url()}
        if user_input is None:
            return self.async_show_form(
                step_id="user",
                data_schema=probatio.Schema({}),
                description_placeholders=placeholders,
            )
        return self.async_create_entry(
            title="Xiaozhi",
            data={},
            description_placeholders=placeholders,
        )

    async def async_step_integration_discovery(
        self, discovery_info: dict[str, Any]
    ) -> ConfigFlowResult:
        """A new device checked in: ask for the code it speaks and shows."""
        self._device_id = discovery_info["device_id"]
        await self.async_set_unique_id(flow_unique_id(self._device_id))
        self.context["title_placeholders"] = {
            "name": f"{discovery_info.get('board') or 'xiaozhi'} {self._device_id}"
        }
        return await self.async_step_activate()

    async def async_step_activate(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Bind the device when the user enters its activation code.

        A wrong, expired or thrown-away code leaves the form open: the device speaks a new code
        at its next check (about every 30 s while it waits). Success adds the device to the
        existing hub entry, so it ends like HA's other flows that change an existing entry (as
        `reauth_successful` does): a message, no new entry.
        """
        if (hub := async_get_hub(self.hass)) is None:
            return self.async_abort(reason="hub_not_loaded")
        errors: dict[str, str] = {}
        if user_input is not None:
            result = await hub.async_activate(self._device_id, user_input[CONF_CODE])
            if result is ActivationResult.ADDED:
                return self.async_abort(
                    reason=result.value, description_placeholders={"device": self._device_id}
                )
            errors[CONF_CODE] = result.value
        return self.async_show_form(
            step_id="activate",
            data_schema=probatio.Schema({probatio.Required(CONF_CODE): str}),
            description_placeholders={"device": self._device_id},
            errors=errors,
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
    """How conversations behave (read at each turn: no reload, no dropped connections).

    Changed ports reopen the always-connected listeners (their devices reconnect by themselves).
    """

    async def async_step_init(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Edit the options."""
        if user_input is not None:
            if int(user_input.get(CONF_MQTT_PORT, DEFAULT_MQTT_PORT)) == TLS_MQTT_PORT:
                return self.async_show_form(
                    step_id="init",
                    data_schema=self._schema(),
                    errors={CONF_MQTT_PORT: "tls_port"},
                )
            return self.async_create_entry(data=user_input)
        return self.async_show_form(step_id="init", data_schema=self._schema())

    def _schema(self) -> probatio.Schema:
        return probatio.Schema(
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
                ),
                probatio.Required(
                    CONF_AUTH_MODE,
                    default=self.config_entry.options.get(CONF_AUTH_MODE, AUTH_MODE_BOUND),
                ): SelectSelector(
                    SelectSelectorConfig(options=AUTH_MODES, translation_key=CONF_AUTH_MODE)
                ),
                probatio.Optional(
                    CONF_ALLOWED_DEVICES,
                    default=self.config_entry.options.get(CONF_ALLOWED_DEVICES, ""),
                ): TextSelector(),
                probatio.Optional(
                    CONF_VISION_ENTITY,
                    description={
                        "suggested_value": self.config_entry.options.get(CONF_VISION_ENTITY)
                    },
                ): EntitySelector(EntitySelectorConfig(domain="ai_task")),
                **{
                    probatio.Required(
                        key, default=self.config_entry.options.get(key, default)
                    ): NumberSelector(
                        NumberSelectorConfig(
                            min=MIN_PORT, max=MAX_PORT, step=1, mode=NumberSelectorMode.BOX
                        )
                    )
                    for key, default in (
                        (CONF_MQTT_PORT, DEFAULT_MQTT_PORT),
                        (CONF_UDP_PORT, DEFAULT_UDP_PORT),
                    )
                },
            }
        )
