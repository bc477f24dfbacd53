"""The camera's "explain" endpoint (protocol.md §6), answered by HA's own AI.

The device's `self.camera.take_photo` tool posts a chunked multipart body (`question`, then the
JPEG as `file`) with the vision token our MCP `initialize` gave it, and hands the response body
to the LLM verbatim. The photo becomes the device's `image` entity, and an `ai_task` entity (the
hub's option, else HA's preferred one) answers the question with that entity as attachment.
"""

from __future__ import annotations

import asyncio
import hmac
from http import HTTPStatus
import logging
from typing import Any, Final

from aiohttp import BodyPartReader, web
from homeassistant.components import ai_task
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers.http import KEY_HASS, HomeAssistantView

from .const import CONF_VISION_ENTITY, DOMAIN
from .core.const import BODY_READ_TIMEOUT_S, VISION_PATH
from .device_tools import DeviceTools
from .hub import XiaozhiHub, async_get_hub
from .image import PHOTO_KEY

_LOGGER = logging.getLogger(__name__)

MAX_PHOTO_BYTES: Final = 2 * 1024 * 1024  # a 1600x1200 JPEG at quality 80 is ~300 KiB
MAX_QUESTION_BYTES: Final = 4096
ANSWER_TIMEOUT_S: Final = 25.0  # the device waits 30 s for our response headers
MAX_ANSWER_CHARS: Final = 4000
TASK_NAME: Final = "xiaozhi camera"
DEFAULT_QUESTION: Final = "Describe what you see."


class PhotoTooLargeError(Exception):
    """The upload exceeds `MAX_PHOTO_BYTES`."""


def _answer(status: HTTPStatus = HTTPStatus.OK, **body: Any) -> web.Response:
    """The JSON the reference server answers with (the LLM reads it as is)."""
    return web.json_response(body, status=status)


def _failure(message: str, status: HTTPStatus = HTTPStatus.OK) -> web.Response:
    return _answer(status, success=False, message=message)


class XiaozhiVisionView(HomeAssistantView):
    """Where the camera uploads; authorized by the per-device vision token, not an HA login."""

    url = VISION_PATH
    name = "api:xiaozhi:vision"
    requires_auth = False

    async def post(self, request: web.Request) -> web.Response:
        """Read the photo and the question, and answer the question about the photo."""
        hass = request.app[KEY_HASS]
        if (hub := async_get_hub(hass)) is None:
            return web.Response(status=HTTPStatus.NOT_FOUND, text="Xiaozhi is not set up")
        tools = _authorized(hub, request)
        if tools is None:
            # Not HTTPUnauthorized: a device with a stale token must not get its IP banned.
            return _failure("invalid vision token", HTTPStatus.UNAUTHORIZED)
        if (request.content_length or 0) > MAX_PHOTO_BYTES + MAX_QUESTION_BYTES:
            return _failure("photo too large", HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
        try:
            async with asyncio.timeout(BODY_READ_TIMEOUT_S):
                question, photo = await _read_upload(request)
        except PhotoTooLargeError:
            _LOGGER.warning(
                "Device %s: photo over %d bytes refused", tools.device.name, MAX_PHOTO_BYTES
            )
            return _failure("photo too large", HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
        except (TimeoutError, ValueError) as err:
            _LOGGER.warning(
                "Device %s: bad photo upload: %s", tools.device.name, str(err) or "timeout"
            )
            return _failure(f"bad upload: {err or 'timeout'}", HTTPStatus.BAD_REQUEST)
        tools.async_set_photo(photo)
        try:
            async with asyncio.timeout(ANSWER_TIMEOUT_S):
                text = await _async_explain(hass, hub, tools, question or DEFAULT_QUESTION)
        except (HomeAssistantError, TimeoutError) as err:
            _LOGGER.warning(
                "Device %s: no answer about the photo: %s", tools.device.name, str(err) or "timeout"
            )
            return _failure(f"no answer: {err or 'timeout'}")
        return _answer(success=True, action="RESPONSE", response=text[:MAX_ANSWER_CHARS])


def _authorized(hub: XiaozhiHub, request: web.Request) -> DeviceTools | None:
    """The tools of the device whose Device-Id and vision token the request carries."""
    device = hub.devices.get(request.headers.get("Device-Id", "").lower())
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if device is None or device.vision_token is None or scheme.lower() != "bearer":
        return None
    if not hmac.compare_digest(token.encode(), device.vision_token.encode()):
        return None
    return hub.device_tools(device)


async def _read_part(part: BodyPartReader, limit: int) -> bytes:
    data = bytearray()
    while chunk := await part.read_chunk():
        data += chunk
        if len(data) > limit:
            raise PhotoTooLargeError
    return bytes(data)


async def _read_upload(request: web.Request) -> tuple[str, bytes]:
    """The `question` and `file` parts (the firmware sends them in this order)."""
    reader = await request.multipart()
    question, photo = "", None
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            raise ValueError("nested multipart")
        if part.name == "question":
            question = (await _read_part(part, MAX_QUESTION_BYTES)).decode(errors="replace")
        elif part.name == "file":
            photo = await _read_part(part, MAX_PHOTO_BYTES)
        else:
            await part.release()
    if not photo:
        raise ValueError("no file part")
    return question.strip(), photo


async def _async_explain(
    hass: HomeAssistant, hub: XiaozhiHub, tools: DeviceTools, question: str
) -> str:
    """Ask the chosen ai_task entity about the device's photo entity."""
    if ai_task.DOMAIN not in hass.config.components:
        raise HomeAssistantError(translation_domain=DOMAIN, translation_key="vision_no_ai_task")

    photo_entity = er.async_get(hass).async_get_entity_id(
        "image", DOMAIN, f"{tools.device.device_id}-{PHOTO_KEY}"
    )
    if photo_entity is None:
        raise HomeAssistantError(
            translation_domain=DOMAIN,
            translation_key="vision_no_photo_entity",
            translation_placeholders={"device": tools.device.name},
        )
    result = await ai_task.async_generate_data(
        hass,
        task_name=TASK_NAME,
        entity_id=hub.entry.options.get(CONF_VISION_ENTITY) or None,
        instructions=question,
        attachments=[
            {
                "media_content_id": f"media-source://image/{photo_entity}",
                "media_content_type": "image/jpeg",
            }
        ],
    )
    return str(result.data)
