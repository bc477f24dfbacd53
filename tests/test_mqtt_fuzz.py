"""Property-based fuzzing of the live MQTT and UDP listeners inside a real HA (loopback only).

Hypothesis generates MQTT connections (anonymous, or as the bound device with its credentials)
that send malformed and well-formed packets, and bursts of UDP datagrams, some aimed at the open
session's ssrc. At least 5,000 inputs reach the hub; afterwards HA has logged no error and the
device is served again: it connects, opens a session, and gets an alert.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
import contextlib
import json
import logging
import socket
import struct
from typing import Any

from homeassistant.core import HomeAssistant
from hypothesis import HealthCheck, given, settings, strategies as st
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.xiaozhi.core import mqtt
from custom_components.xiaozhi.core.messages import Alert
from tools.emulator import DeviceEmulator

from .conftest import make_hub_entry
from .test_mqtt import hub_of, switch_to_mqtt, until

type MakeDevice = Callable[..., Coroutine[Any, Any, DeviceEmulator]]

MQTT_EXAMPLES = 600
UDP_EXAMPLES = 800
MIN_INPUTS = 5_000
PACKETS_PER_CONNECTION = 12
DATAGRAMS_PER_BURST = 10
EXAMPLE_TIMEOUT_S = 10.0
DEVICE_TYPES = ["hello", "listen", "abort", "mcp", "goodbye", "iot", ""]


@pytest.fixture(autouse=True)
def _loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("custom_components.xiaozhi.hub.MQTT_LISTEN_HOST", "127.0.0.1")


@pytest.fixture
def hub_entry() -> MockConfigEntry:
    return make_hub_entry(mqtt_port=0, udp_port=0)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
device_json = st.fixed_dictionaries(
    {"type": st.sampled_from(DEVICE_TYPES) | json_values},
    optional={
        "state": st.sampled_from(["start", "stop", "detect"]) | json_values,
        "mode": st.sampled_from(["auto", "manual", "realtime"]) | json_values,
        "session_id": st.text(max_size=40) | json_values,
        "payload": json_values,
        "transport": st.just("udp") | json_values,
        "audio_params": st.dictionaries(
            st.sampled_from(["format", "sample_rate", "channels", "frame_duration"]), json_values
        ),
    },
).map(lambda d: json.dumps(d).encode())
payloads = st.one_of(st.binary(max_size=200), device_json, st.just(b"[" * 5000 + b"]" * 5000))


def _packet(first: int, body: bytes) -> bytes:
    length = bytearray()
    size = len(body)
    while True:
        byte, size = size & 0x7F, size >> 7
        length.append(byte | (0x80 if size else 0))
        if not size:
            break
    return bytes([first]) + bytes(length) + body


def _publish(qos: int, topic: str, payload: bytes) -> bytes:
    raw = topic.encode()
    body = len(raw).to_bytes(2, "big") + raw + (b"\x00\x01" if qos else b"") + payload
    return _packet(0x30 | qos << 1, body)


packets = st.one_of(
    st.binary(min_size=1, max_size=60),  # garbage, often a bad type or length
    st.builds(_packet, st.integers(0, 255), st.binary(max_size=80)),  # any type and flags
    st.builds(_publish, st.integers(0, 3), st.text(max_size=20), payloads),
    st.sampled_from([b"\xc0\x00", b"\xe0\x00", b"\x82\x06\x00\x01\x00\x01#\x00", b"\xa2\x00"]),
    st.just(b"\x30\xff\xff\xff\xff\x01"),  # a remaining length over 4 bytes
    st.just(b"\x30\xff\xff\xff\x7f"),  # a 268 MB packet announced
)
connections = st.fixed_dictionaries(
    {
        "auth": st.sampled_from(["device", "wrong", "garbage", "none"]),
        "keepalive": st.integers(0, 65535),
        "packets": st.lists(packets, min_size=1, max_size=PACKETS_PER_CONNECTION),
    }
)


def _datagram(kind: int, length: int | None, ssrc: int, seq: int, payload: bytes) -> bytes:
    size = len(payload) if length is None else length
    return struct.pack(">BBHIII", kind, 0, size & 0xFFFF, ssrc, 0, seq) + payload


async def throw_mqtt(port: int, device: DeviceEmulator, case: dict[str, Any]) -> int:
    """One connection: maybe a CONNECT, then the case's packets; return how many were sent."""
    sent = 0
    settings = device.mqtt_settings
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            if case["auth"] == "device":
                writer.write(
                    mqtt.connect(
                        str(settings["client_id"]),
                        str(settings["username"]),
                        str(settings["password"]),
                        case["keepalive"],
                    )
                )
            elif case["auth"] == "wrong":
                writer.write(mqtt.connect("x", str(settings["username"]), "guess", 60))
            elif case["auth"] == "garbage":
                writer.write(b"\x10\x05\x00\x04MQTT")
            for packet in case["packets"]:
                writer.write(packet)
                sent += 1
            await writer.drain()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.01):
                    await reader.read(1024)
        finally:
            writer.transport.abort()
    return sent


async def test_fuzz_mqtt_and_udp(
    hass: HomeAssistant,
    make_device: MakeDevice,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    device = await make_device()
    known = await switch_to_mqtt(hass, device)
    hub = hub_of(hass)
    # The connection lists the device's tools and reads its status: let the device answer
    # before the fuzzer takes its connection over (its client cannot publish on a closed one).
    await until(lambda: bool(hub.device_tools(known).status))
    await device.connect()
    mqtt_port, udp_port = hub.mqtt.mqtt_port, hub.mqtt.udp_port
    ssrc = int.from_bytes(bytes.fromhex(device.server_hello_udp["nonce"])[4:8], "big")
    loop = asyncio.get_running_loop()
    total = 0

    @settings(
        max_examples=MQTT_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=connections)
    def fuzz_mqtt(case: dict[str, Any]) -> None:
        nonlocal total
        future = asyncio.run_coroutine_threadsafe(throw_mqtt(mqtt_port, device, case), loop)
        total += future.result(EXAMPLE_TIMEOUT_S)

    await asyncio.to_thread(fuzz_mqtt)
    mqtt_inputs = total

    datagrams = st.one_of(
        st.binary(max_size=100),
        st.builds(
            _datagram,
            st.integers(0, 2),
            st.none() | st.integers(0, 70000),
            st.just(ssrc) | st.integers(0, 2**32 - 1),
            st.integers(0, 2**32 - 1),
            st.binary(max_size=200),
        ),
        st.just(b"\x01" * 5000),
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))

        @settings(
            max_examples=UDP_EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(burst=st.lists(datagrams, min_size=1, max_size=DATAGRAMS_PER_BURST))
        def fuzz_udp(burst: list[bytes]) -> None:
            nonlocal total
            for datagram in burst:
                udp.sendto(datagram, ("127.0.0.1", udp_port))
                total += 1

        await asyncio.to_thread(fuzz_udp)
        await asyncio.sleep(0.2)  # let the loop take the last datagrams

    print(f"fuzz: {mqtt_inputs} MQTT packets, {total - mqtt_inputs} UDP datagrams")
    assert total >= MIN_INPUTS
    assert sum(hub.mqtt.udp.drops.values()) > 0
    # The emulated device's own client (paho, logger "mqtt") may log that the fuzzer's takeover
    # reset its connection: that is the device's side, not HA's.
    problems = [
        r
        for r in caplog.records
        if r.name != "mqtt"
        and (r.levelno >= logging.ERROR or r.exc_info is not None or "Traceback" in r.getMessage())
    ]
    assert problems == []

    # The device is served again: it reconnects (the fuzzer took its connection), opens a
    # session, streams audio, and is reachable between conversations.
    await device.disconnect_mqtt()
    await device.connect_mqtt()
    await until(lambda: known.connection is not None and known.connection.connected)
    assert await device.connect() is not None
    await device.stream_pcm(b"\0" * 32000, realtime=False)
    await until(lambda: known.session is not None)
    await known.async_send(Alert(status="s", message="still here"))
    assert (await device.wait_for("alert"))["message"] == "still here"
