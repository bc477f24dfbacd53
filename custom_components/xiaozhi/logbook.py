"""Activity (logbook) entries: a device whose Assistant cannot hold a voice conversation.

HA's logbook has no translations for an integration's entries (the describe callback gets no
language, and the frontend shows the message as given), so the message is plain English; the
device itself says the translated explanation, and the repair is translated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from homeassistant.components.logbook.const import (
    LOGBOOK_ENTRY_ENTITY_ID,
    LOGBOOK_ENTRY_MESSAGE,
    LOGBOOK_ENTRY_NAME,
)
from homeassistant.const import ATTR_DEVICE_ID, ATTR_ENTITY_ID, ATTR_NAME
from homeassistant.core import Event, HomeAssistant, callback
from homeassistant.helpers import device_registry as dr

from .const import DOMAIN, EVENT_VOICE_UNAVAILABLE
from .voice import ATTR_PIPELINE, ATTR_PROBLEM, ATTR_TURN, NO_STT, NO_TTS

MISSING: Final = {NO_STT: "speech-to-text", NO_TTS: "text-to-speech"}
UNKNOWN_DEVICE: Final = "Xiaozhi device"

type Describe = Callable[[Event], dict[str, str | None]]


@callback
def async_describe_events(
    hass: HomeAssistant, async_describe_event: Callable[[str, str, Describe], None]
) -> None:
    """Describe the events the integration fires."""

    @callback
    def describe_voice_unavailable(event: Event) -> dict[str, str | None]:
        data = event.data
        device = dr.async_get(hass).async_get(data.get(ATTR_DEVICE_ID) or "")
        name = (device.name_by_user or device.name) if device else None
        missing = MISSING.get(data.get(ATTR_PROBLEM, ""), "what a voice conversation needs")
        what = "could not answer" if data.get(ATTR_TURN) else "cannot hold a voice conversation"
        return {
            LOGBOOK_ENTRY_NAME: name or data.get(ATTR_NAME) or UNKNOWN_DEVICE,
            LOGBOOK_ENTRY_MESSAGE: (
                f"{what}: its assistant {data.get(ATTR_PIPELINE)} has no {missing}"
                " (see Settings > Repairs)"
            ),
            LOGBOOK_ENTRY_ENTITY_ID: data.get(ATTR_ENTITY_ID),
        }

    async_describe_event(DOMAIN, EVENT_VOICE_UNAVAILABLE, describe_voice_unavailable)
