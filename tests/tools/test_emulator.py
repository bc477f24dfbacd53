"""The emulator's own behaviour, against a tiny server that records what it sends (no hub)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
import json
from typing import Any

from aiohttp import WSMsgType, web
import pytest

from custom_components.xiaozhi.core.codec import OpusDecoder, OpusEncoder
from custom_components.xiaozhi.core.messages import ListenMode
from tools.emulator import DeviceEmulator, DeviceState

from ..audio import tone

TOKEN = "secret-token"
FRAME_S = 0.06
SETTLE_S = 0.2  # a frame in flight when the state changes, and the scheduler's slack


@dataclass
class Recorder:
    """An OTA endpoint and a device channel that record what the client sends."""

    url: str = ""
    activation: bool = False
    query: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)  # of each message
    audio: list[tuple[float, bytes]] = field(default_factory=list)
    ws: web.WebSocketResponse | None = None
    connected: asyncio.Event = field(default_factory=asyncio.Event)

    def listen(self, state: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == "listen" and m["state"] == state]

    def frames_between(self, start: float, end: float) -> int:
        return sum(1 for t, _ in self.audio if start <= t < end)

    async def send(self, message: dict[str, Any]) -> float:
        """Send one message; return when it left."""
        assert self.ws is not None
        await self.ws.send_str(json.dumps(message))
        return asyncio.get_running_loop().time()

    async def ota(self, request: web.Request) -> web.Response:
        answer: dict[str, Any] = {
            "websocket": {"url": self.url.replace("http", "ws") + "/ws", "token": TOKEN}
        }
        if self.activation:
            answer["activation"] = {"code": "123456", "message": "code", "challenge": "x"}
        return web.json_response(answer)

    async def channel(self, request: web.Request) -> web.WebSocketResponse:
        self.query = dict(request.query)
        self.headers = dict(request.headers)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.ws = ws
        self.connected.set()
        loop = asyncio.get_running_loop()
        async for msg in ws:
            if msg.type is WSMsgType.BINARY:
                self.audio.append((loop.time(), msg.data))
            elif msg.type is WSMsgType.TEXT:
                message = json.loads(msg.data)
                self.messages.append(message)
                self.arrivals.append(loop.time())
                if message["type"] == "hello":
                    await self.send(
                        {
                            "type": "hello",
                            "transport": "websocket",
                            "session_id": "s1",
                            "audio_params": {"sample_rate": 24000, "frame_duration": 60},
                        }
                    )
        return ws


@pytest.fixture
async def recorder(socket_enabled: None) -> AsyncIterator[Recorder]:
    recorder = Recorder()
    app = web.Application()
    app.router.add_post("/xiaozhi/ota/", recorder.ota)
    app.router.add_get("/ws", recorder.channel)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    recorder.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield recorder
    if recorder.ws is not None:
        await recorder.ws.close()
    await runner.cleanup()


@pytest.fixture
async def make_device(recorder: Recorder) -> AsyncIterator[Any]:
    devices: list[DeviceEmulator] = []

    async def _make(**kwargs: Any) -> DeviceEmulator:
        device = DeviceEmulator(recorder.url + "/xiaozhi/ota/", **kwargs)
        devices.append(device)
        await device.check_ota()
        await device.connect()
        return device

    yield _make
    for device in devices:
        await device.close()


async def reply(recorder: Recorder, frames: int = 0) -> tuple[float, float]:
    """Answer like a server: `tts start`, `frames` of paced audio, `tts stop`; return both times."""
    started = await recorder.send({"type": "tts", "state": "start"})
    encoder = OpusEncoder(24000, 60)
    await asyncio.sleep(0.6)
    assert recorder.ws is not None
    for _ in range(frames):
        await recorder.ws.send_bytes(encoder.encode(b"\0" * 2880))
    stopped = await recorder.send({"type": "tts", "state": "stop"})
    return started, stopped


async def test_realtime_mode_streams_while_speaking_and_never_relistens(
    recorder: Recorder, make_device: Any
) -> None:
    device = await make_device(listen_mode=ListenMode.REALTIME)
    microphone = device.start_microphone(noise=30)
    await device.listen_start()
    await microphone.say(tone(0.3, 16000))
    started, stopped = await reply(recorder)
    await asyncio.sleep(0.6)
    # The microphone kept streaming through the reply, and a second utterance follows on the
    # same `listen start`: the device never sends another one.
    assert recorder.frames_between(started + SETTLE_S, stopped) >= 0.3 / FRAME_S
    before = len(recorder.audio)
    await microphone.say(tone(0.3, 16000))
    await asyncio.sleep(SETTLE_S)
    assert len(recorder.audio) - before >= 0.3 / FRAME_S
    assert [m["mode"] for m in recorder.listen("start")] == ["realtime"]
    assert device.state is DeviceState.LISTENING


async def test_auto_mode_mutes_while_speaking_and_relistens_after_playback(
    recorder: Recorder, make_device: Any
) -> None:
    device = await make_device()
    microphone = device.start_microphone()
    await device.listen_start()
    await microphone.say(tone(0.3, 16000))
    started, stopped = await reply(recorder, frames=10)  # 0.6 s of audio, sent at once
    assert recorder.frames_between(started + SETTLE_S, stopped) == 0
    for _ in range(100):
        if len(recorder.listen("start")) == 2:
            break
        await asyncio.sleep(0.02)
    assert [m["mode"] for m in recorder.listen("start")] == ["auto", "auto"]
    # The new `listen start` waits until the queued reply has played, then the mic streams.
    relistened = [
        t
        for t, m in zip(recorder.arrivals, recorder.messages, strict=True)
        if m["type"] == "listen" and m["state"] == "start"
    ][1]
    assert relistened - stopped > 0.5
    assert recorder.frames_between(stopped, relistened) == 0
    await asyncio.sleep(0.3)
    assert recorder.frames_between(relistened, float("inf")) >= 3
    assert microphone.muted > 0


async def test_manual_mode_sends_audio_only_while_held(
    recorder: Recorder, make_device: Any
) -> None:
    device = await make_device(listen_mode=ListenMode.MANUAL)
    microphone = device.start_microphone()
    await device.listen_start()
    await microphone.say(tone(0.3, 16000))
    await device.listen_stop()
    released = asyncio.get_running_loop().time()
    assert device.state is DeviceState.IDLE
    await reply(recorder)
    await asyncio.sleep(0.3)
    assert recorder.frames_between(released + SETTLE_S, float("inf")) == 0
    assert [m["state"] for m in recorder.messages if m["type"] == "listen"] == ["start", "stop"]
    assert recorder.listen("start")[0]["mode"] == "manual"
    assert device.state is DeviceState.IDLE


async def test_20_ms_frames(recorder: Recorder, make_device: Any) -> None:
    device = await make_device(frame_duration=20)
    hello = recorder.messages[0]
    assert hello["audio_params"]["frame_duration"] == 20
    await device.listen_start()
    sent = await device.stream_pcm(tone(0.2, 16000), realtime=False)
    assert sent == 10
    for _ in range(50):
        if len(recorder.audio) == sent:
            break
        await asyncio.sleep(0.02)
    decoder = OpusDecoder(16000)
    assert [len(decoder.decode(packet)) // 2 for _, packet in recorder.audio] == [320] * sent


async def test_web_client_sends_identity_as_query_parameters(
    recorder: Recorder, make_device: Any
) -> None:
    device = await make_device(web_client=True)
    assert recorder.query == {
        "device-id": device.device_id,
        "client-id": device.client_id,
        "authorization": f"Bearer {TOKEN}",
    }
    assert not {"Device-Id", "Client-Id", "Authorization", "Protocol-Version"} & set(
        recorder.headers
    )
    assert recorder.messages[0]["device_id"] == device.device_id


async def test_firmware_sends_identity_as_headers(recorder: Recorder, make_device: Any) -> None:
    device = await make_device()
    assert recorder.query == {}
    assert recorder.headers["Device-Id"] == device.device_id
    assert recorder.headers["Authorization"] == f"Bearer {TOKEN}"
    assert recorder.messages[0]["audio_params"]["frame_duration"] == 60


async def test_typed_text(recorder: Recorder, make_device: Any) -> None:
    device = await make_device()
    await device.send_text_input("turn on the light")
    for _ in range(50):
        if len(recorder.messages) == 2:
            break
        await asyncio.sleep(0.02)
    assert recorder.messages[1] == {
        "session_id": "s1",
        "type": "listen",
        "state": "detect",
        "text": "turn on the light",
    }


async def test_channel_from_an_answer_that_also_asks_for_activation(
    recorder: Recorder, make_device: Any
) -> None:
    recorder.activation = True
    device = await make_device()
    assert device.activation_code == "123456"
    assert recorder.headers["Authorization"] == f"Bearer {TOKEN}"
