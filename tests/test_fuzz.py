"""Property-based fuzzing of the live WebSocket endpoint inside a real HA (loopback only).

Hypothesis generates connections, each with a protocol version, an optional valid hello and a
burst of malformed text and binary frames. At least 10,000 inputs reach the hub; afterwards HA
has logged no error and a well-behaved device still gets served.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
import json
import logging
import struct
from typing import Any

import aiohttp
from homeassistant.core import HomeAssistant
from hypothesis import HealthCheck, given, settings, strategies as st
import pytest

from custom_components.xiaozhi.core.const import MAX_TEXT_MESSAGE_BYTES, MAX_WEBSOCKET_FRAME_BYTES
from custom_components.xiaozhi.core.messages import ClientHello
from tools.emulator import DeviceEmulator

from .audio import tone

type MakeDevice = Callable[..., Coroutine[Any, Any, DeviceEmulator]]

EXAMPLES = 3000
MIN_INPUTS = 10_000
FRAMES_PER_CONNECTION = 40
EXAMPLE_TIMEOUT_S = 10.0
DEVICE_TYPES = ["hello", "listen", "abort", "mcp", "goodbye", "iot", "ping", ""]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
device_like = st.fixed_dictionaries(
    {"type": st.sampled_from(DEVICE_TYPES) | st.text(max_size=10) | json_values},
    optional={
        "state": st.sampled_from(["start", "stop", "detect", "sing"]) | json_values,
        "mode": st.sampled_from(["auto", "manual", "realtime", "x"]) | json_values,
        "session_id": st.text(max_size=40) | json_values,
        "payload": json_values,
        "text": st.text(max_size=40) | json_values,
        "audio_params": st.dictionaries(
            st.sampled_from(["format", "sample_rate", "channels", "frame_duration"]), json_values
        ),
        "version": json_values,
    },
)
text_frames = st.one_of(
    st.text(max_size=200),
    device_like.map(lambda d: json.dumps(d, ensure_ascii=False)),
    json_values.map(json.dumps),
    st.integers(1, 3000).map(lambda n: "[" * n + "]" * n),
    st.just('{"type":"abort","x":"' + "x" * MAX_TEXT_MESSAGE_BYTES + '"}'),
)
headers = st.one_of(
    st.builds(
        lambda v, t, s: struct.pack(">HHIII", v, t, 0, 0, s),
        st.integers(0, 3),
        st.integers(0, 2),
        st.integers(0, 70000),
    ),
    st.builds(lambda t, s: struct.pack(">BBH", t, 0, s), st.integers(0, 2), st.integers(0, 65535)),
    st.just(b""),
)
binary_frames = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda h, p: h + p, headers, st.binary(max_size=300)),
    st.just(b"\x00" * (MAX_WEBSOCKET_FRAME_BYTES + 1)),
    st.just(b"\x00" * 5000),
)
connections = st.fixed_dictionaries(
    {
        "version": st.sampled_from(["1", "2", "3", "0", "x"]),
        "hello": st.booleans(),
        "frames": st.lists(
            st.one_of(
                text_frames.map(lambda t: ("text", t)), binary_frames.map(lambda b: ("bin", b))
            ),
            min_size=5,
            max_size=FRAMES_PER_CONNECTION,
        ),
    }
)

VALID_HELLO = ClientHello(features={"mcp": True}).to_json()  # what the firmware sends


async def throw(
    http: aiohttp.ClientSession, url: str, device: DeviceEmulator, case: dict[str, Any]
) -> int:
    """Open one connection and send the case's frames; return how many inputs were sent."""
    sent = 0
    try:
        async with http.ws_connect(
            url,
            headers={
                "Authorization": f"Bearer {device.ota_answer['websocket']['token']}",
                "Device-Id": device.device_id,
                "Client-Id": device.client_id,
                "Protocol-Version": case["version"],
            },
        ) as ws:
            if case["hello"]:
                await ws.send_str(VALID_HELLO)
            for kind, frame in case["frames"]:
                if ws.closed:
                    break
                if kind == "text":
                    await ws.send_str(frame)
                else:
                    await ws.send_bytes(frame)
                sent += 1
            await ws.close()
    except (aiohttp.ClientError, ConnectionError):
        pass  # refused (bad version header) or dropped by the hub: both are answers
    return sent


async def test_fuzz_live_endpoint(
    hass: HomeAssistant,
    ota_url: str,
    make_device: MakeDevice,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    url = ota_url.replace("http://", "ws://").replace("/xiaozhi/ota/", "/xiaozhi/v1/")
    bound = await make_device()  # the fuzzer speaks as a bound device, with its token
    loop = asyncio.get_running_loop()
    total = 0

    async with aiohttp.ClientSession() as http:

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=connections)
        def fuzz(case: dict[str, Any]) -> None:
            nonlocal total
            future = asyncio.run_coroutine_threadsafe(throw(http, url, bound, case), loop)
            total += future.result(EXAMPLE_TIMEOUT_S)

        await asyncio.to_thread(fuzz)

    print(f"fuzz: {total} inputs over {EXAMPLES} connections")
    assert total >= MIN_INPUTS
    problems = [
        r
        for r in caplog.records
        if r.levelno >= logging.ERROR or r.exc_info is not None or "Traceback" in r.getMessage()
    ]
    assert problems == []

    # The hub still serves a well-behaved device.
    device = await make_device()
    hello = await device.connect()
    assert hello is not None
    await device.stream_pcm(tone(0.3, 16000), realtime=False)
    await device.detect("你好小智")
    await asyncio.sleep(0.1)
    assert not device.closed
