"""The OTA and WebSocket endpoints inside a real HA, driven by the device emulator over loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
import json
import time
from typing import Any

import aiohttp
from homeassistant.core import HomeAssistant
import numpy as np
import pytest
from yarl import URL

from custom_components.xiaozhi.const import DOMAIN
from custom_components.xiaozhi.core import DeviceSession, SessionState
from custom_components.xiaozhi.core.const import (
    MAX_PLAYBACK_LEAD_FRAMES,
    MAX_TEXT_MESSAGE_BYTES,
    MAX_WEBSOCKET_FRAME_BYTES,
    CloseCode,
)
from custom_components.xiaozhi.core.reply import Reply
from custom_components.xiaozhi.hub import XiaozhiHub
from tools.emulator import DeviceEmulator

from .audio import tone

type MakeDevice = Callable[..., Coroutine[Any, Any, DeviceEmulator]]


def hub(hass: HomeAssistant) -> XiaozhiHub:
    entry = hass.config_entries.async_entries(DOMAIN)[0]
    result: XiaozhiHub = entry.runtime_data
    return result


async def session_of(hass: HomeAssistant, device: DeviceEmulator) -> DeviceSession:
    for _ in range(100):
        for session in hub(hass).sessions:
            if session.device.device_id == device.device_id and session.ready:
                return session
        await asyncio.sleep(0.01)
    raise AssertionError("no session for the device")


def rms(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(samples**2)))


async def test_ota_answer_shape(hass: HomeAssistant, make_device: MakeDevice, ota_url: str) -> None:
    before = time.time() * 1000
    device = await make_device()
    answer = device.ota_answer
    assert answer is not None
    assert set(answer) == {"server_time", "firmware", "websocket"}
    timestamp = answer["server_time"]["timestamp"]
    assert isinstance(timestamp, int)
    assert before - 1000 <= timestamp <= time.time() * 1000 + 1000  # epoch milliseconds
    assert isinstance(answer["server_time"]["timezone_offset"], int)
    assert answer["firmware"] == {"version": "2.0.3", "url": ""}
    ws_url = URL(answer["websocket"]["url"])
    # The device reaches HA where it reached the OTA endpoint.
    assert (ws_url.scheme, ws_url.host, ws_url.port) == ("ws", URL(ota_url).host, URL(ota_url).port)
    assert ws_url.path == "/xiaozhi/v1/"
    token = answer["websocket"]["token"]
    assert token == hub(hass).devices[device.device_id].token
    assert len(token) >= 40
    assert answer["websocket"]["version"] == 1


async def test_ota_rejects_bad_requests(hass: HomeAssistant, ota_url: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(ota_url, data=b"{}") as response:  # no Device-Id
            assert response.status == 400
            assert "Device-Id" in (await response.json())["error"]
        headers = {"Device-Id": "aa:bb:cc:dd:ee:ff"}
        async with http.post(ota_url, data=b"{broken", headers=headers) as response:
            assert response.status == 400
        async with http.post(ota_url, data=b"x" * 200_000, headers=headers) as response:
            assert response.status == 413


@pytest.mark.parametrize("version", [1, 2, 3])
async def test_handshake_and_audio_in_each_framing(
    hass: HomeAssistant, make_device: MakeDevice, version: int
) -> None:
    device = await make_device(protocol_version=version)
    received: list[int] = []
    satellite = hub(hass).devices[device.device_id].handler
    assert satellite is not None
    satellite.audio_received = lambda session, pcm, scored: received.append(len(pcm))  # type: ignore[method-assign]

    started = time.monotonic()
    hello = await device.connect()
    assert time.monotonic() - started < 1.0
    assert hello is not None and hello.transport == "websocket"
    assert hello.audio_params.sample_rate == 24000
    session = await session_of(hass, device)
    assert session.session_id == hello.session_id
    assert session.device.protocol_version == version

    # Audio before `listen` is valid (the firmware sends its wake-word audio first).
    sent = await device.stream_pcm(tone(0.6, 16000), realtime=False)
    for _ in range(100):
        if len(received) == sent:
            break
        await asyncio.sleep(0.01)
    assert received == [960 * 2] * 10  # 60 ms of 16 kHz 16-bit mono per frame


@pytest.mark.parametrize("version", [1, 3])
async def test_reply_audio_round_trips_through_opus(
    hass: HomeAssistant, make_device: MakeDevice, version: int
) -> None:
    device = await make_device(protocol_version=version)
    await device.connect()
    session = await session_of(hass, device)
    reply_pcm = tone(1.2, 24000)

    async def audio() -> AsyncIterator[bytes]:
        yield reply_pcm

    assert await session.speak(Reply.of(audio(), ["你好，我是小智。"]))
    await device.wait_for("tts", "stop")
    states = [m.get("state") for m in device.received.of_type("tts")]
    assert states == ["start", "sentence_start", "stop"]
    assert device.received.of_type("tts", "sentence_start")[0]["text"] == "你好，我是小智。"
    decoded = device.reply_pcm()
    assert len(decoded) == len(reply_pcm)
    skip = 1440 * 2
    assert rms(decoded[skip:]) == pytest.approx(rms(reply_pcm[skip:]), rel=0.15)
    # Paced: the device never holds more than MAX_PLAYBACK_LEAD_FRAMES ahead of its playback,
    # so 1.2 s of audio takes at least 1.2 s minus that lead to arrive.
    times = [t for t, _ in device.received.audio]
    assert times[-1] - times[0] >= (len(times) - 1 - MAX_PLAYBACK_LEAD_FRAMES) * 0.06 - 0.005


async def test_wrong_token_refused(hass: HomeAssistant, make_device: MakeDevice) -> None:
    device = await make_device()
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await device.connect(token="made-up")
    assert info.value.status == 403
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await device.connect(token="")


async def hello_then(device: DeviceEmulator) -> None:
    await device.connect()


async def no_hello(device: DeviceEmulator) -> None:
    await device.connect(hello=False)


BAD_INPUTS: list[tuple[str, Any, CloseCode]] = [
    ("non-JSON text", (hello_then, "text", "hello?"), CloseCode.PROTOCOL_ERROR),
    ("missing fields", (hello_then, "text", '{"type": "listen"}'), CloseCode.PROTOCOL_ERROR),
    ("binary before hello", (no_hello, "binary", b"\x01\x02\x03"), CloseCode.PROTOCOL_ERROR),
    (
        "text before hello",
        (no_hello, "text", '{"type": "listen", "state": "start"}'),
        CloseCode.PROTOCOL_ERROR,
    ),
    (
        "oversized frame",
        (hello_then, "binary", b"\x00" * (MAX_WEBSOCKET_FRAME_BYTES + 1)),
        CloseCode.MESSAGE_TOO_BIG,
    ),
    (
        "oversized text",
        (hello_then, "text", '{"type":"abort","x":"' + "x" * MAX_TEXT_MESSAGE_BYTES + '"}'),
        CloseCode.MESSAGE_TOO_BIG,
    ),
    ("oversized opus packet", (hello_then, "binary", b"\x00" * 5000), CloseCode.MESSAGE_TOO_BIG),
    (
        "deeply nested JSON",
        (hello_then, "text", '{"type":"abort","x":' + "[" * 5000 + "]" * 5000 + "}"),
        CloseCode.PROTOCOL_ERROR,
    ),
    (
        "wrong audio params",
        (
            no_hello,
            "text",
            json.dumps(
                {
                    "type": "hello",
                    "version": 1,
                    "transport": "websocket",
                    "audio_params": {
                        "format": "opus",
                        "sample_rate": 44100,
                        "channels": 1,
                        "frame_duration": 60,
                    },
                }
            ),
        ),
        CloseCode.UNSUPPORTED_DATA,
    ),
    (
        "non-opus audio",
        (no_hello, "text", json.dumps({"type": "hello", "audio_params": {"format": "pcm"}})),
        CloseCode.UNSUPPORTED_DATA,
    ),
]


@pytest.mark.parametrize(("name", "action", "code"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
async def test_bad_input_closes_cleanly(
    hass: HomeAssistant,
    make_device: MakeDevice,
    caplog: pytest.LogCaptureFixture,
    name: str,
    action: Any,
    code: CloseCode,
) -> None:
    well_behaved = await make_device()
    await well_behaved.connect()
    offender = await make_device()
    opener, kind, payload = action
    await opener(offender)
    if kind == "text":
        await offender.send_text(payload)
    else:
        await offender.send_binary(payload)
    assert await offender.wait_closed(timeout=5) == code
    assert "Traceback" not in caplog.text
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]

    # The hub keeps serving the other device.
    session = await session_of(hass, well_behaved)

    async def audio() -> AsyncIterator[bytes]:
        yield tone(0.3, 24000)

    assert await session.speak(Reply.of(audio()))
    await well_behaved.wait_for("tts", "stop")
    assert len(well_behaved.received.audio) == 5


async def test_truncated_headers_close(hass: HomeAssistant, make_device: MakeDevice) -> None:
    for version, frame in ((2, b"\x00\x02\x00\x00\x00"), (3, b"\x00\x00\x00\x10\x01")):
        device = await make_device(protocol_version=version)
        await device.connect()
        await device.send_binary(frame)
        assert await device.wait_closed(timeout=5) == CloseCode.PROTOCOL_ERROR


async def test_unknown_type_is_ignored(hass: HomeAssistant, make_device: MakeDevice) -> None:
    device = await make_device()
    await device.connect()
    await device.send_text('{"type": "iot", "states": []}')
    await device.send_json({"type": "listen", "state": "stop"})
    session = await session_of(hass, device)
    session.state = SessionState.LISTENING
    for _ in range(100):
        if session.state is SessionState.IDLE:
            break
        await asyncio.sleep(0.01)
    assert session.state is SessionState.IDLE  # the next message was handled
    assert not device.closed


async def test_unload_and_reload_with_devices_connected(
    hass: HomeAssistant, make_device: MakeDevice, ota_url: str
) -> None:
    devices = [await make_device() for _ in range(3)]
    for device in devices:
        await device.connect()
    entry = hass.config_entries.async_entries(DOMAIN)[0]

    assert await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()
    for device in devices:
        assert await device.wait_closed(timeout=5) == CloseCode.GOING_AWAY
    lingering = [t for t in asyncio.all_tasks() if t.get_name().startswith("xiaozhi")]
    assert lingering == []
    headers = {"Device-Id": "aa:bb:cc:dd:ee:ff"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(ota_url, data=b"{}", headers=headers) as response,
    ):
        assert response.status == 404

    # Reload without restarting HA: the same endpoints serve again.
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    again = await make_device()
    hello = await again.connect()
    assert hello is not None
    session = await session_of(hass, again)

    async def audio() -> AsyncIterator[bytes]:
        yield tone(0.12, 24000)

    assert await session.speak(Reply.of(audio()))
    assert len(hub(hass).sessions) == 1


async def test_audio_flood_closes_the_channel(hass: HomeAssistant, make_device: MakeDevice) -> None:
    device = await make_device()
    await device.connect()
    # The wake-word burst the firmware sends right after its hello is fine...
    await device.stream_pcm(tone(2.0, 16000), realtime=False)
    await asyncio.sleep(0.1)
    assert not device.closed
    # ...a stream many times faster than real time is not.
    await device.stream_pcm(tone(6.0, 16000), realtime=False)
    assert await device.wait_closed(timeout=5) == CloseCode.POLICY_VIOLATION


async def test_message_flood_closes_the_channel(
    hass: HomeAssistant, make_device: MakeDevice
) -> None:
    device = await make_device()
    await device.connect()
    for _ in range(100):
        if device.closed:
            break
        await device.send_text('{"type": "listen", "state": "detect", "text": "hi"}')
    assert await device.wait_closed(timeout=5) == CloseCode.POLICY_VIOLATION


async def test_a_new_connection_replaces_the_old_one(
    hass: HomeAssistant, make_device: MakeDevice
) -> None:
    first = await make_device()
    await first.connect()
    second = DeviceEmulator(
        first.ota_url, device_id=first.device_id, client_id=first.client_id, relisten=False
    )
    assert first.ota_answer is not None
    second.use_ota_answer(first.ota_answer)
    try:
        await second.connect()
        assert await first.wait_closed(timeout=5) == CloseCode.REPLACED
        session = await session_of(hass, second)
        assert session.session_id == second.session_id
        assert len(hub(hass).sessions) == 1
        assert hub(hass).devices[first.device_id].session is session
    finally:
        await second.close()
