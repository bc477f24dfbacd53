"""A third-party client against the hub: the `xiaozhi-sdk` package from PyPI, unmodified.

The client does what its own command line does, with a programmatic microphone instead of a
sound card: OTA check, activation (it polls `/activate` itself and then reconnects with the token
of its first OTA answer), WebSocket with header auth, hello with 60 ms frames, `listen start
mode=realtime`, typed "hi", then speech. What it needs from the hub (xiaozhi_sdk/core.py, ota.py):
- the OTA answer of a device that is not yet added carries `websocket` (`url`, `token`) besides
  `activation` (`code`, `challenge`): the client reads `ota_info["websocket"]["token"]` and
  `ota_info["activation"]["challenge"]` unconditionally;
- that token opens the channel once the user entered the code (the client does not ask again),
  and the channel of the not-yet-added device opens too (the client connects before activation;
  if that fails its activation task later calls `close()` on no socket and never reconnects);
- a follow-up utterance on the same `listen start`: realtime mode sends no new one after a reply;
- `llm` messages carry `text` (its command line prints `message["text"]`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
import ctypes.util
from typing import Any

from homeassistant.const import STATE_ON
from homeassistant.core import HomeAssistant
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from tools.audio import frame_bytes, pcm_frames

from .conftest import async_enter_code, make_hub_entry
from .providers import Providers

MAC = "02:00:5d:1a:2b:3c"
FRAME_S = 0.06
SPEAKING_GRACE_S = 0.5  # the SDK's command line waits this long after `tts stop` to listen
TIMEOUT_S = 60.0


@pytest.fixture
def hub_entry(providers: Providers) -> MockConfigEntry:
    """The hub, set up after the providers (their HTTP views must exist before the server)."""
    return make_hub_entry()


class SdkUser:
    """The SDK's command line without a sound card: its message handler and microphone loop."""

    def __init__(self, ota_url: str) -> None:
        from xiaozhi_sdk import XiaoZhiWebsocket  # noqa: PLC0415  (see the `user` fixture)

        self.messages: list[dict[str, Any]] = []
        self.speaking = False
        self.client = XiaoZhiWebsocket(self.on_message, ota_url=ota_url, audio_sample_rate=16000)

    async def on_message(self, message: dict[str, Any]) -> None:
        """Like `xiaozhi_sdk.cli.handle_message`: mute the microphone while the reply plays."""
        self.messages.append(message)
        if message.get("type") == "tts" and message.get("state") == "start":
            self.speaking = True
        elif message.get("type") == "tts" and message.get("state") == "stop":
            await asyncio.sleep(SPEAKING_GRACE_S)
            self.speaking = False

    async def microphone(self, pcm: bytes) -> None:
        """Send `pcm`, then silence, in real time, 60 ms per call, while not speaking."""
        frames = list(pcm_frames(pcm))
        silence = b"\0" * frame_bytes()
        loop = asyncio.get_running_loop()
        start = loop.time()
        sent = 0
        while True:
            if not self.speaking:
                await self.client.send_audio(frames[sent] if sent < len(frames) else silence)
                sent += 1
            start += FRAME_S
            await asyncio.sleep(max(0.0, start - loop.time()))

    async def wait_for(self, kind: str, state: str | None = None, after: int = 0) -> int:
        """Wait for a message of a type (and state) from index `after` on; return its index."""
        async with asyncio.timeout(TIMEOUT_S):
            while True:
                for index, message in enumerate(self.messages[after:], start=after):
                    if message.get("type") == kind and state in (None, message.get("state")):
                        return index
                await asyncio.sleep(0.05)


async def until(condition: Callable[[], bool]) -> None:
    """Poll the SDK's state (it has no events to wait on)."""
    async with asyncio.timeout(TIMEOUT_S):
        while True:
            if condition():
                return
            await asyncio.sleep(0.05)


@pytest.fixture
async def user(ota_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[SdkUser]:
    """The SDK's client; its import points ctypes' find_library("opus") at its own libopus."""
    monkeypatch.setattr(ctypes.util, "find_library", ctypes.util.find_library)  # undone after
    user = SdkUser(ota_url)
    yield user
    await user.client.close()


async def activate_and_speak(hass: HomeAssistant, user: SdkUser, speech: bytes) -> tuple[int, int]:
    """What the SDK's user does: boot, enter the code in HA, wait for its reconnect, speak.

    Returns the index of the first message on the reconnected channel and of the `stt`.
    """
    client = user.client
    # Boot: OTA check (the hub asks for activation), channel, hello, listen start, typed "hi".
    assert await client.init_connection(MAC)
    assert client.wait_device_activated
    # The user reads the code the device was given and types it into HA.
    assert client.ota is not None
    answer = await client.ota.activate_device()
    await async_enter_code(hass, MAC, answer["activation"]["code"])
    # The client's own activation task sees 200 on /activate and reconnects.
    await until(lambda: not client.wait_device_activated)
    reconnected = len(user.messages)
    await asyncio.sleep(1.0)  # the hub may answer the typed "hi"; let that reply finish
    await until(lambda: not user.speaking)

    before = len(user.messages)
    mic = asyncio.get_running_loop().create_task(user.microphone(speech))
    try:
        heard = await user.wait_for("stt", after=before)
        await user.wait_for("tts", "stop", after=heard)
    finally:
        mic.cancel()
    return reconnected, heard


async def test_xiaozhi_sdk_activates_and_turns_on_the_light(
    hass: HomeAssistant, providers: Providers, user: SdkUser, speech: bytes
) -> None:
    client = user.client
    reconnected, heard = await activate_and_speak(hass, user, speech)

    assert user.messages[heard]["text"] == "turn on the kitchen light"
    assert hass.states.get(providers.light.entity_id).state == STATE_ON
    assert user.messages[reconnected:], "nothing arrived on the reconnected channel"
    for message in user.messages:
        if message["type"] == "llm":
            assert isinstance(message.get("text"), str), message
    assert any(m["type"] == "tts" and m["state"] == "sentence_start" for m in user.messages)
    assert client.output_audio_queue, "no reply audio the client could decode"
