"""Check a cloud service's settings before they are saved (test-before-configure).

Each check makes the smallest request that a wrong key reliably fails: 0.5 s of silence for an
OpenAI-compatible transcription API (OpenAI refuses audio under 0.1 s; listing models is not
offered by every such server, and a listed model may still not transcribe), a DashScope task
started and closed unused (no audio or text: nothing is billed), Edge's voice list (Edge
takes no key; the voice must exist), and a one-token answer from a conversation agent's model.
The subentry flows run them, and so does the repair that asks for a new API key.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from enum import StrEnum
from typing import Any, Final

import aiohttp
from homeassistant.config_entries import ConfigSubentry
from homeassistant.const import CONF_API_KEY
from homeassistant.core import HomeAssistant
from homeassistant.helpers.aiohttp_client import async_get_clientsession
import openai

from .cloud import SpeechAuthError, SpeechServiceError, cosyvoice, edge, openai_stt, paraformer
from .cloud.audio import wav_file
from .cloud.errors import SpeechRejectedError
from .const import (
    CONF_BASE_URL,
    CONF_LANGUAGE,
    CONF_MODEL,
    CONF_SERVICE,
    CONF_TIMEOUT,
    CONF_VOICE,
    SERVICE_DASHSCOPE,
    SERVICE_OPENAI,
    SUBENTRY_CONVERSATION,
    SUBENTRY_STT,
    SUBENTRY_TTS,
)
from .llm_client import ErrorKind, async_validate
from .network import cannot_reach, causes
from .subentry import async_create_openai_client

CHECK_TIMEOUT_S: Final = 10.0
SILENCE_S: Final = 0.5
SILENCE_RATE: Final = 16000


class CheckError(StrEnum):
    """Why a check failed (also the form's error keys)."""

    INVALID_AUTH = "invalid_auth"  # the service refused the key
    CANNOT_REACH = "cannot_reach"  # no DNS answer, no network or nothing listening (network.py)
    CANNOT_CONNECT = "cannot_connect"  # reached, but the address is not the service
    TIMEOUT = "timeout"
    REJECTED = "rejected"  # the service refused the model, voice or language
    UNKNOWN_VOICE = "unknown_voice"  # Edge has no such voice
    UNEXPECTED = "unexpected"  # an answer the check does not understand


# Failures where the check itself may be wrong (offline at setup, a server that dislikes a test
# recording): the form then offers to save anyway.
SAVE_ANYWAY_ERRORS: Final = frozenset(
    {CheckError.CANNOT_REACH, CheckError.CANNOT_CONNECT, CheckError.TIMEOUT, CheckError.UNEXPECTED}
)


def classify(err: BaseException) -> CheckError:
    """What a failed check means to the user, from the error and what caused it."""
    chain = list(causes(err))
    if any(
        isinstance(e, SpeechAuthError | openai.AuthenticationError | openai.PermissionDeniedError)
        for e in chain
    ):
        return CheckError.INVALID_AUTH
    if cannot_reach(err):
        return CheckError.CANNOT_REACH
    if any(isinstance(e, TimeoutError | openai.APITimeoutError) for e in chain):
        return CheckError.TIMEOUT
    if any(
        isinstance(e, SpeechRejectedError | openai.NotFoundError | openai.UnprocessableEntityError)
        for e in chain
    ):
        return CheckError.REJECTED
    if any(
        isinstance(
            e,
            aiohttp.WSServerHandshakeError
            | aiohttp.ClientConnectionError
            | openai.APIConnectionError
            | ConnectionError,
        )
        for e in chain
    ):
        return CheckError.CANNOT_CONNECT
    return CheckError.UNEXPECTED


def _timeout(data: Mapping[str, Any]) -> float:
    return min(CHECK_TIMEOUT_S, float(data[CONF_TIMEOUT]))


async def _outcome(check: Awaitable[object]) -> CheckError | None:
    """Run one service's check; what its failure means to the user, or None."""
    try:
        await check
    except SpeechServiceError as err:
        return classify(err)
    return None


async def async_check_openai_stt(hass: HomeAssistant, data: Mapping[str, Any]) -> CheckError | None:
    """Transcribe 0.5 s of silence."""
    client = await async_create_openai_client(hass, dict(data))
    transcriber = openai_stt.OpenAiTranscriber(
        client, model=data[CONF_MODEL], timeout=_timeout(data)
    )
    silence = wav_file(bytes(int(SILENCE_RATE * SILENCE_S) * 2), SILENCE_RATE, 2, 1)
    return await _outcome(transcriber.transcribe(silence, language=data.get(CONF_LANGUAGE) or None))


async def async_check_paraformer(hass: HomeAssistant, data: Mapping[str, Any]) -> CheckError | None:
    """Start a recognition task and close it."""
    client = paraformer.ParaformerClient(
        async_get_clientsession(hass),
        data[CONF_API_KEY],
        url=data[CONF_BASE_URL],
        model=data[CONF_MODEL],
        timeout=_timeout(data),
    )
    return await _outcome(client.check(language=data.get(CONF_LANGUAGE) or None))


async def async_check_cosyvoice(hass: HomeAssistant, data: Mapping[str, Any]) -> CheckError | None:
    """Start a synthesis task with the voice and close it."""
    client = cosyvoice.CosyVoiceClient(
        async_get_clientsession(hass),
        data[CONF_API_KEY],
        url=data[CONF_BASE_URL],
        model=data[CONF_MODEL],
        timeout=_timeout(data),
    )
    return await _outcome(client.check(voice=data[CONF_VOICE]))


async def async_check_edge(hass: HomeAssistant, data: Mapping[str, Any]) -> CheckError | None:
    """Fetch Edge's voice list: the voice must be in it."""
    try:
        voices = await edge.EdgeTtsClient(timeout=_timeout(data)).async_fetch_voices()
    except SpeechServiceError as err:
        return classify(err)
    if not voices:
        return CheckError.UNEXPECTED
    if data[CONF_VOICE] not in {voice.voice_id for voice in voices}:
        return CheckError.UNKNOWN_VOICE
    return None


async def async_check_agent(hass: HomeAssistant, data: Mapping[str, Any]) -> ErrorKind | None:
    """Stream a one-token answer, as the agent will (`llm_client.async_validate`)."""
    client = await async_create_openai_client(hass, data)
    return await async_validate(client, model=data[CONF_MODEL], timeout=_timeout(data))


type Check = Callable[[HomeAssistant, Mapping[str, Any]], Awaitable[StrEnum | None]]
# The check of each kind of subentry that has an API key: (subentry type, service) -> check.
API_KEY_CHECKS: Final[dict[tuple[str, str | None], Check]] = {
    (SUBENTRY_CONVERSATION, None): async_check_agent,
    (SUBENTRY_STT, SERVICE_OPENAI): async_check_openai_stt,
    (SUBENTRY_STT, SERVICE_DASHSCOPE): async_check_paraformer,
    (SUBENTRY_TTS, SERVICE_DASHSCOPE): async_check_cosyvoice,
}


def api_key_check(subentry: ConfigSubentry) -> Check | None:
    """The check a subentry's key is tried with (None: its service takes no key)."""
    return API_KEY_CHECKS.get((subentry.subentry_type, subentry.data.get(CONF_SERVICE)))
