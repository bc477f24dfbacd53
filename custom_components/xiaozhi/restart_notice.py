"""The add-on's spoken "Home Assistant is restarting", in the voice of each device's Assistant.

While HA is away the add-on cannot synthesize speech, so HA renders the notice for each device
when its relayed channel opens, with the TTS engine, language and voice of the device's own
Assistant, and hands it to the add-on; devices without a screen then hear it.
"""

from __future__ import annotations

import base64
import logging
from typing import Final

from homeassistant.components import tts
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError

from .core.relay import RESTARTING_MESSAGES
from .devices import XiaozhiDevice
from .media import TTS_OPTIONS, tts_pcm
from .voice import device_pipeline

_LOGGER = logging.getLogger(__name__)

MAX_NOTICE_S: Final = 10.0  # a notice longer than this is cut (the add-on keeps no more)


async def async_render_notice(
    hass: HomeAssistant, device: XiaozhiDevice, sample_rate: int
) -> dict[str, str] | None:
    """The notice message for the add-on (text and PCM), or None without a TTS engine."""
    pipeline = device_pipeline(hass, device)
    if not pipeline.tts_engine:
        return None
    language = pipeline.tts_language or pipeline.language
    text = RESTARTING_MESSAGES["zh" if language.lower().startswith("zh") else "en"]
    options = dict(TTS_OPTIONS)
    if pipeline.tts_voice:
        options[tts.ATTR_VOICE] = pipeline.tts_voice
    limit = int(MAX_NOTICE_S * sample_rate * 2)
    pcm = bytearray()
    try:
        stream = tts.async_create_stream(hass, pipeline.tts_engine, pipeline.tts_language, options)
        stream.async_set_message(text)
        async for chunk in tts_pcm(hass, stream.token, sample_rate):
            pcm += chunk
            if len(pcm) >= limit:
                break
    except HomeAssistantError as err:
        _LOGGER.debug("No spoken restart notice for %s: %s", device.device_id, err)
        return None
    return {
        "type": "notice",
        "device": device.device_id,
        "text": text,
        "pcm": base64.b64encode(bytes(pcm[:limit])).decode(),
    }
