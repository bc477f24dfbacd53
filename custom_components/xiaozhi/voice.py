"""Whether a device's Assistant can hear and answer by voice, and a repair while it cannot.

A fresh Home Assistant's preferred "Home Assistant" assistant has no speech-to-text, and new
devices use the preferred one: caught when the device is added, when its Assistant select
changes and before each spoken turn, never as a raw pipeline error on the device. A new
problem, and each turn it refuses, is also fired as an event the device's Activity shows
(`logbook.py`).
"""

from __future__ import annotations

from typing import Final

from homeassistant.components import stt
from homeassistant.components.assist_pipeline import Pipeline, async_get_pipelines
from homeassistant.components.assist_pipeline.error import PipelineNotFound
from homeassistant.components.assist_pipeline.pipeline import async_get_pipeline
from homeassistant.components.assist_pipeline.select import get_chosen_pipeline
from homeassistant.components.assist_satellite import DOMAIN as SATELLITE_DOMAIN
from homeassistant.const import ATTR_DEVICE_ID, ATTR_ENTITY_ID, ATTR_NAME
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import (
    device_registry as dr,
    entity_registry as er,
    issue_registry as ir,
    translation,
)

from .const import DOMAIN, EVENT_VOICE_UNAVAILABLE, ISSUE_PIPELINE_CANNOT_LISTEN
from .devices import XiaozhiDevice
from .issues import async_raise_issue, device_issue_id

NO_STT = "pipeline_no_stt"  # repair and explanation translation keys
NO_TTS = "pipeline_no_tts"
PROBLEMS = (NO_STT, NO_TTS)
# The data of EVENT_VOICE_UNAVAILABLE besides the device and satellite ids and the device's name.
ATTR_PROBLEM: Final = "problem"  # one of PROBLEMS
ATTR_PIPELINE: Final = "pipeline"  # the Assistant's name
ATTR_TURN: Final = "turn"  # True: a turn was refused; False: the problem was found


@callback
def voice_problem(hass: HomeAssistant, pipeline: Pipeline) -> str | None:
    """What keeps `pipeline` from a voice turn (a translation key), or None."""
    if (
        pipeline.stt_engine is None
        or stt.async_get_speech_to_text_engine(hass, pipeline.stt_engine) is None
    ):
        return NO_STT
    if pipeline.tts_engine is None:
        return NO_TTS
    return None


@callback
def device_pipeline(hass: HomeAssistant, device: XiaozhiDevice) -> Pipeline:
    """The Assistant the device's select names (the preferred one by default)."""
    try:
        return async_get_pipeline(hass, get_chosen_pipeline(hass, DOMAIN, device.device_id))
    except PipelineNotFound:
        return async_get_pipeline(hass)


@callback
def voice_pipelines(hass: HomeAssistant) -> list[Pipeline]:
    """The Assistants that can hold a voice conversation."""
    return [p for p in async_get_pipelines(hass) if voice_problem(hass, p) is None]


@callback
def async_check_voice(
    hass: HomeAssistant,
    device: XiaozhiDevice,
    pipeline: Pipeline | None = None,
    *,
    turn: bool = False,
) -> str | None:
    """Raise the device's repair if its Assistant cannot do voice, else clear it.

    A new problem (this run), and every refused `turn`, also goes to the device's Activity.
    """
    pipeline = pipeline or device_pipeline(hass, device)
    issue_id = device_issue_id(ISSUE_PIPELINE_CANNOT_LISTEN, device.device_id)
    problem = voice_problem(hass, pipeline)
    found = (problem, pipeline.name) if problem else None
    is_new = found != device.voice_problem
    device.voice_problem = found
    if problem is None:
        ir.async_delete_issue(hass, DOMAIN, issue_id)
        return None
    async_raise_issue(
        hass,
        issue_id,
        problem,
        {"device": device.name, "pipeline": pipeline.name},
        ir.IssueSeverity.ERROR,
        fix={"device_id": device.device_id},
    )
    if is_new or turn:
        _async_fire_voice_unavailable(hass, device, problem, pipeline.name, turn=turn)
    return problem


@callback
def _async_fire_voice_unavailable(
    hass: HomeAssistant, device: XiaozhiDevice, problem: str, pipeline: str, *, turn: bool
) -> None:
    """Tell the device's Activity (through `logbook.py`) that it cannot hold a conversation."""
    entities = er.async_get(hass)
    satellite = entities.async_get_entity_id(  # its unique id, as entity.py makes it
        SATELLITE_DOMAIN, DOMAIN, f"{device.device_id}-assist_satellite"
    )
    registered = entities.async_get(satellite) if satellite else None
    device_id = registered.device_id if registered else None
    entry = dr.async_get(hass).async_get(device_id) if device_id else None
    hass.bus.async_fire(
        EVENT_VOICE_UNAVAILABLE,
        {
            ATTR_DEVICE_ID: device_id,
            ATTR_ENTITY_ID: satellite,
            ATTR_NAME: (entry.name_by_user or entry.name) if entry else device.name,
            ATTR_PROBLEM: problem,
            ATTR_PIPELINE: pipeline,
            ATTR_TURN: turn,
        },
    )


async def async_explain(hass: HomeAssistant, key: str, placeholders: dict[str, str]) -> str:
    """The translated explanation `exceptions.<key>` in HA's language, for the device to say."""
    language = hass.config.language
    strings = await translation.async_get_translations(hass, language, "exceptions", {DOMAIN})
    message = strings.get(f"component.{DOMAIN}.exceptions.{key}.message", key)
    return message.format(**placeholders)
