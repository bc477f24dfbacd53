"""Each device's selects: pipeline, VAD sensitivity, end of speech, connection, screen theme."""

from __future__ import annotations

from homeassistant.components.assist_pipeline import OPTION_PREFERRED, async_get_pipelines
from homeassistant.components.assist_pipeline.pipeline import KEY_ASSIST_PIPELINE
from homeassistant.components.assist_pipeline.select import (
    AssistPipelineSelect,
    VadSensitivitySelect,
)
from homeassistant.components.select import SelectEntity, SelectEntityDescription
from homeassistant.const import EntityCategory
from homeassistant.core import HomeAssistant, callback
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.helpers.event import async_track_state_change_event
from homeassistant.helpers.restore_state import RestoreEntity

from .const import (
    CONF_TRANSPORT,
    DOMAIN,
    END_OF_SPEECH_COMMAND,
    END_OF_SPEECH_KEY,
    END_OF_SPEECH_OPTIONS,
    TRANSPORTS,
)
from .device_tools import DeviceTools
from .devices import XiaozhiDevice
from .entity import (
    XiaozhiEntity,
    XiaozhiToolEntity,
    async_add_device_entities,
    async_add_tool_entities,
)
from .hub import XiaozhiConfigEntry
from .voice import async_check_voice, voice_problem

PARALLEL_UPDATES = 1  # the theme is a device tool call: one at a time per entity
THEME_TOOL = "self.screen.set_theme"
THEME_KEY = "screen.theme"
THEMES = ["light", "dark"]


async def async_setup_entry(
    hass: HomeAssistant,
    entry: XiaozhiConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add the pipeline, VAD sensitivity and connection selects of each device, and its theme."""
    async_add_device_entities(
        hass,
        entry,
        async_add_entities,
        lambda device: [
            XiaozhiPipelineSelect(hass, device),
            XiaozhiVadSensitivitySelect(hass, device),
            EndOfSpeechSelect(device),
            XiaozhiTransportSelect(entry, device),
        ],
    )

    def themes(device: XiaozhiDevice, tools: DeviceTools) -> list[ScreenTheme]:
        return [ScreenTheme(device, tools)] if ScreenTheme.exists_for(device) else []

    async_add_tool_entities(hass, entry, async_add_entities, themes)


class XiaozhiPipelineSelect(XiaozhiEntity, AssistPipelineSelect):
    """Which Assist pipeline the device uses: only one that can hear and speak.

    "Preferred" is always accepted (it changes elsewhere); while it cannot do voice, the
    device has a repair.
    """

    def __init__(self, hass: HomeAssistant, device: XiaozhiDevice) -> None:
        """Create the select."""
        XiaozhiEntity.__init__(self, device)
        AssistPipelineSelect.__init__(self, hass, DOMAIN, device.device_id)

    async def async_added_to_hass(self) -> None:
        """Check the device's Assistant now and whenever it is edited."""
        await super().async_added_to_hass()
        self.async_on_remove(
            async_track_state_change_event(self.hass, [self.entity_id], self._async_recheck)
        )
        store = self.hass.data[KEY_ASSIST_PIPELINE].pipeline_store
        self.async_on_remove(store.async_add_change_set_listener(self._async_pipelines_changed))
        async_check_voice(self.hass, self.device)

    async def _async_pipelines_changed(self, _changes: object) -> None:
        self._async_recheck()

    @callback
    def _async_recheck(self, _event: object = None) -> None:
        async_check_voice(self.hass, self.device)

    async def async_select_option(self, option: str) -> None:
        """Refuse an Assistant without speech-to-text or text-to-speech, and say why."""
        if option != OPTION_PREFERRED:
            pipeline = next((p for p in async_get_pipelines(self.hass) if p.name == option), None)
            if pipeline is not None and (problem := voice_problem(self.hass, pipeline)):
                raise ServiceValidationError(
                    translation_domain=DOMAIN,
                    translation_key=problem,
                    translation_placeholders={"device": self.device.name, "pipeline": option},
                )
        await super().async_select_option(option)


class XiaozhiVadSensitivitySelect(XiaozhiEntity, VadSensitivitySelect):
    """How long a pause ends what the user says."""

    def __init__(self, hass: HomeAssistant, device: XiaozhiDevice) -> None:
        """Create the select."""
        XiaozhiEntity.__init__(self, device)
        VadSensitivitySelect.__init__(self, hass, device.device_id)


class EndOfSpeechSelect(XiaozhiEntity, SelectEntity, RestoreEntity):
    """Whether a short pause ends what the user says once the words make a command.

    The satellite reads this entity's state at the start of each turn (`command_check`).
    """

    entity_description = SelectEntityDescription(
        key=END_OF_SPEECH_KEY,
        translation_key=END_OF_SPEECH_KEY,
        entity_category=EntityCategory.CONFIG,
        options=END_OF_SPEECH_OPTIONS,
    )
    _attr_current_option = END_OF_SPEECH_COMMAND

    async def async_added_to_hass(self) -> None:
        """Keep the user's choice over restarts."""
        await super().async_added_to_hass()
        if (state := await self.async_get_last_state()) and state.state in self.options:
            self._attr_current_option = state.state

    async def async_select_option(self, option: str) -> None:
        """Use `option` from the next turn on."""
        self._attr_current_option = option
        self.async_write_ha_state()


class ScreenTheme(XiaozhiToolEntity, SelectEntity):
    """The screen's theme (the firmware knows `light` and `dark`)."""

    entity_description = SelectEntityDescription(
        key="screen_theme", translation_key="screen_theme", entity_category=EntityCategory.CONFIG
    )
    _attr_options = THEMES
    tool = THEME_TOOL

    @property
    def current_option(self) -> str | None:
        """The theme the device reported."""
        theme = self.tools.status.get(THEME_KEY)
        return theme if theme in THEMES else None

    async def async_select_option(self, option: str) -> None:
        """Set the theme on the device; it answers false for a theme it lacks."""
        if await self.tools.async_call(THEME_TOOL, {"theme": option}) == "false":
            raise HomeAssistantError(
                translation_domain=DOMAIN,
                translation_key="tool_failed",
                translation_placeholders={
                    "device": self.device.name,
                    "tool": THEME_TOOL,
                    "error": option,
                },
            )
        self.tools.async_set_value(THEME_KEY, option)


TRANSPORT = SelectEntityDescription(
    key=CONF_TRANSPORT,
    translation_key=CONF_TRANSPORT,
    entity_category=EntityCategory.CONFIG,
    options=TRANSPORTS,
)


class XiaozhiTransportSelect(XiaozhiEntity, SelectEntity):
    """How the device connects: a WebSocket per conversation, or always connected (MQTT+UDP).

    The device reads it from its OTA check at start; the hub restarts a reachable device that
    is not in a conversation so the change applies at once.
    """

    entity_description = TRANSPORT

    def __init__(self, entry: XiaozhiConfigEntry, device: XiaozhiDevice) -> None:
        """Create the select."""
        super().__init__(device)
        self.entry = entry

    @property
    def current_option(self) -> str:
        """The transport the device's next OTA answer gives it."""
        return self.device.transport

    async def async_select_option(self, option: str) -> None:
        """Switch the device's transport."""
        await self.entry.runtime_data.async_set_transport(self.device, option)
        self.async_write_ha_state()
