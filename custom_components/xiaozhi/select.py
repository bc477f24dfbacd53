"""Pipeline and VAD sensitivity selects for each xiaozhi device, as HA's other satellites have."""

from __future__ import annotations

from homeassistant.components.assist_pipeline import OPTION_PREFERRED, async_get_pipelines
from homeassistant.components.assist_pipeline.pipeline import KEY_ASSIST_PIPELINE
from homeassistant.components.assist_pipeline.select import (
    AssistPipelineSelect,
    VadSensitivitySelect,
)
from homeassistant.core import HomeAssistant, callback
from homeassistant.exceptions import ServiceValidationError
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.helpers.event import async_track_state_change_event

from .const import DOMAIN
from .devices import XiaozhiDevice
from .entity import XiaozhiEntity, async_add_device_entities
from .hub import XiaozhiConfigEntry
from .voice import async_check_voice, voice_problem


async def async_setup_entry(
    hass: HomeAssistant,
    entry: XiaozhiConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add the pipeline and VAD sensitivity selects of each device."""
    async_add_device_entities(
        hass,
        entry,
        async_add_entities,
        lambda device: [
            XiaozhiPipelineSelect(hass, device),
            XiaozhiVadSensitivitySelect(hass, device),
        ],
    )


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
