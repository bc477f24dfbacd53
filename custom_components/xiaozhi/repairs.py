"""Fix flows: add a device, choose an Assistant that can talk, require codes, replace an API key."""

from __future__ import annotations

from typing import Any

from homeassistant.components.repairs import RepairsFlow
from homeassistant.components.select import DOMAIN as SELECT_DOMAIN, SERVICE_SELECT_OPTION
from homeassistant.config_entries import ConfigEntry, ConfigSubentry
from homeassistant.const import ATTR_ENTITY_ID, ATTR_OPTION, CONF_API_KEY, Platform
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResult
from homeassistant.helpers import device_registry as dr, entity_registry as er
from homeassistant.helpers.selector import (
    AreaSelector,
    SelectSelector,
    SelectSelectorConfig,
    SelectSelectorMode,
    TextSelector,
    TextSelectorConfig,
    TextSelectorType,
)
import probatio

from .activation import ActivationResult
from .const import (
    AUTH_MODE_BOUND,
    CONF_AUTH_MODE,
    CONF_CODE,
    DOMAIN,
    ISSUE_API_KEY_REJECTED,
    ISSUE_DEVICE_WAITING,
    ISSUE_OPEN_TO_LOCAL_NETWORK,
)
from .devices import XiaozhiDevice, device_name
from .hub import XiaozhiHub, async_get_hub
from .issues import async_delete_api_key_issue
from .service_check import api_key_check
from .voice import PROBLEMS, async_check_voice, device_pipeline, voice_pipelines

CONF_AREA = "area"
CONF_PIPELINE = "pipeline"
_PASSWORD = TextSelector(TextSelectorConfig(type=TextSelectorType.PASSWORD))


async def async_create_fix_flow(
    hass: HomeAssistant, issue_id: str, data: dict[str, str | int | float | None] | None
) -> RepairsFlow:
    """The fix flow of a fixable repair (its `kind` is the issue's translation key)."""
    kind = (data or {}).get("kind")
    device_id = str((data or {}).get("device_id", ""))
    if kind == ISSUE_DEVICE_WAITING:
        return AddDeviceFlow(device_id)
    if kind in PROBLEMS:
        return ChooseAssistantFlow(device_id)
    if kind == ISSUE_OPEN_TO_LOCAL_NETWORK:
        return CloseToLocalNetworkFlow()
    if kind == ISSUE_API_KEY_REJECTED:
        return ApiKeyFlow(str((data or {}).get("subentry_id", "")))
    raise ValueError(f"no fix flow for {issue_id}")


class _DeviceFlow(RepairsFlow):
    """A fix flow about one device, which ends by choosing its Assistant if need be."""

    def __init__(self, device_id: str) -> None:
        """Fix something about the device with this MAC."""
        self.device_id = device_id

    def _hub(self) -> XiaozhiHub | None:
        return async_get_hub(self.hass)

    async def async_step_pipeline(
        self, user_input: dict[str, Any] | None = None
    ) -> FlowResult[Any, str]:
        """Choose an Assistant with speech-to-text and text-to-speech for the device."""
        if (hub := self._hub()) is None or (device := hub.devices.get(self.device_id)) is None:
            return self.async_abort(reason="device_gone")
        choices = sorted(p.name for p in voice_pipelines(self.hass))
        if user_input is not None:
            await self._async_select(device, user_input[CONF_PIPELINE])
            if async_check_voice(self.hass, device) is None:
                return self.async_create_entry(data={})
        current = device_pipeline(self.hass, device)
        if not choices:
            return self.async_abort(
                reason="no_voice_pipeline", description_placeholders={"pipeline": current.name}
            )
        schema = probatio.Schema(
            {
                probatio.Required(CONF_PIPELINE, default=choices[0]): SelectSelector(
                    SelectSelectorConfig(options=choices, mode=SelectSelectorMode.LIST)
                )
            }
        )
        return self.async_show_form(
            step_id="pipeline",
            data_schema=schema,
            description_placeholders={"device": device.name, "pipeline": current.name},
        )

    async def _async_select(self, device: XiaozhiDevice, pipeline_name: str) -> None:
        """Pick it in the device's Assistant select, as the user would."""
        entity_id = er.async_get(self.hass).async_get_entity_id(
            Platform.SELECT, DOMAIN, f"{device.device_id}-pipeline"
        )
        if entity_id is not None:
            await self.hass.services.async_call(
                SELECT_DOMAIN,
                SERVICE_SELECT_OPTION,
                {ATTR_ENTITY_ID: entity_id, ATTR_OPTION: pipeline_name},
                blocking=True,
            )


class AddDeviceFlow(_DeviceFlow):
    """Add a waiting device with the code it speaks; then make sure it can talk."""

    async def async_step_init(
        self, user_input: dict[str, Any] | None = None
    ) -> FlowResult[Any, str]:
        """Open the form (the repairs manager passes the issue id as input here)."""
        return await self.async_step_code()

    async def async_step_code(
        self, user_input: dict[str, Any] | None = None
    ) -> FlowResult[Any, str]:
        """Ask for the code (and where the device is)."""
        if (hub := self._hub()) is None:
            return self.async_abort(reason="hub_not_loaded")
        waiting = hub.activations.waiting(self.device_id)
        if not waiting and self.device_id in hub.devices:
            return self.async_abort(reason="already_added")
        name = device_name(self.device_id, waiting[0].board if waiting else None)
        errors: dict[str, str] = {}
        if user_input is not None:
            result = await hub.async_activate(self.device_id, user_input[CONF_CODE])
            if result is ActivationResult.ADDED:
                device = hub.devices[self.device_id]
                self._set_area(hub, device, user_input.get(CONF_AREA))
                if async_check_voice(self.hass, device) is not None:
                    if voice_pipelines(self.hass):
                        return await self.async_step_pipeline()
                    return self.async_abort(
                        reason="added_without_voice",
                        description_placeholders={
                            "device": name,
                            "pipeline": device_pipeline(self.hass, device).name,
                        },
                    )
                return self.async_abort(
                    reason=result.value, description_placeholders={"device": name}
                )
            errors[CONF_CODE] = result.value
        schema = probatio.Schema(
            {
                probatio.Required(CONF_CODE): str,
                probatio.Optional(CONF_AREA): AreaSelector(),
            }
        )
        return self.async_show_form(
            step_id="code",
            data_schema=self.add_suggested_values_to_schema(schema, user_input or {}),
            description_placeholders={
                "device": name,
                "mac": self.device_id,
                "attempts": str(hub.activations.attempts_left(self.device_id)),
            },
            errors=errors,
        )

    def _set_area(self, hub: XiaozhiHub, device: XiaozhiDevice, area_id: str | None) -> None:
        registry = dr.async_get(self.hass)
        entry = registry.async_get_device_by_identifier(
            (DOMAIN, device.device_id), hub.entry.entry_id
        )
        if area_id and entry is not None:
            registry.async_update_device(entry.id, area_id=area_id)


class ChooseAssistantFlow(_DeviceFlow):
    """The device's Assistant cannot do voice: choose one that can."""

    async def async_step_init(
        self, user_input: dict[str, Any] | None = None
    ) -> FlowResult[Any, str]:
        """Go straight to the choice (the input here is the issue id)."""
        return await self.async_step_pipeline()


class CloseToLocalNetworkFlow(RepairsFlow):
    """Only devices added with their code again."""

    async def async_step_init(
        self, user_input: dict[str, Any] | None = None
    ) -> FlowResult[Any, str]:
        """Open the confirmation (the input here is the issue id)."""
        return await self.async_step_confirm()

    async def async_step_confirm(
        self, user_input: dict[str, Any] | None = None
    ) -> FlowResult[Any, str]:
        """Confirm, then switch the hub back to codes."""
        if user_input is not None:
            for entry in self.hass.config_entries.async_entries(DOMAIN):
                self.hass.config_entries.async_update_entry(
                    entry, options={**entry.options, CONF_AUTH_MODE: AUTH_MODE_BOUND}
                )
            return self.async_create_entry(data={})
        return self.async_show_form(step_id="confirm", data_schema=probatio.Schema({}))


class ApiKeyFlow(RepairsFlow):
    """A cloud service rejected its API key: enter a new one, checked as the service's flow does.

    HA has no reauthentication step for subentries; this is it, opened from the repair.
    """

    def __init__(self, subentry_id: str) -> None:
        """Ask for the key of this subentry."""
        self.subentry_id = subentry_id

    def _find(self) -> tuple[ConfigEntry[Any], ConfigSubentry] | None:
        for entry in self.hass.config_entries.async_entries(DOMAIN):
            if (subentry := entry.subentries.get(self.subentry_id)) is not None:
                return entry, subentry
        return None

    async def async_step_init(
        self, user_input: dict[str, Any] | None = None
    ) -> FlowResult[Any, str]:
        """Open the form (the input here is the issue id)."""
        return await self.async_step_api_key()

    async def async_step_api_key(
        self, user_input: dict[str, Any] | None = None
    ) -> FlowResult[Any, str]:
        """Ask for the key; save it once the service accepts it."""
        found = self._find()
        check = api_key_check(found[1]) if found is not None else None
        if found is None or check is None:
            async_delete_api_key_issue(self.hass, self.subentry_id)
            return self.async_abort(reason="subentry_gone")
        entry, subentry = found
        errors: dict[str, str] = {}
        if user_input is not None:
            data = {**subentry.data, CONF_API_KEY: user_input[CONF_API_KEY]}
            if (error := await check(self.hass, data)) is None:
                # The hub reloads the service's entities with it (SubentryReloader).
                self.hass.config_entries.async_update_subentry(entry, subentry, data=data)
                return self.async_create_entry(data={})
            errors["base"] = str(error)
        return self.async_show_form(
            step_id="api_key",
            data_schema=probatio.Schema({probatio.Required(CONF_API_KEY): _PASSWORD}),
            errors=errors,
            description_placeholders={"name": subentry.title},
        )
