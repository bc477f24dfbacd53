"""The MQTT 3.1.1 codec: what the firmware's client sends, read; what the server sends, written."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings, strategies as st
import pytest

from custom_components.xiaozhi.core import mqtt
from custom_components.xiaozhi.core.errors import MessageTooBigError
from custom_components.xiaozhi.core.mqtt import PacketType

MAX = 1 << 16


async def read(data: bytes, limit: int = MAX) -> mqtt.Packet:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return await mqtt.read_packet(reader, limit)


async def test_connect_round_trip() -> None:
    packet = await read(mqtt.connect("client-uuid", "aa:bb:cc:dd:ee:ff", "secret", 240))
    assert packet.type is PacketType.CONNECT
    hello = mqtt.parse_connect(packet.body)
    assert (hello.client_id, hello.username, hello.password) == (
        "client-uuid",
        "aa:bb:cc:dd:ee:ff",
        "secret",
    )
    assert hello.keepalive_s == 240
    assert "secret" not in repr(hello)


async def test_connect_with_will_and_legacy_protocol() -> None:
    body = b"\x00\x06MQIsdp\x03" + bytes([0x02 | 0x04 | 0x80]) + b"\x00\x3c"
    body += b"\x00\x01c" + b"\x00\x01t" + b"\x00\x02hi" + b"\x00\x01u"
    hello = mqtt.parse_connect(body)
    assert (hello.protocol_level, hello.username, hello.password) == (3, "u", None)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"\x00\x04MQTT\x05\x02\x00\x3c\x00\x00", mqtt.UnsupportedProtocolError),  # MQTT 5
        (b"\x00\x04MQTT\x04\x03\x00\x3c\x00\x00", mqtt.MqttError),  # reserved flag
        (b"\x00\x04MQTT\x04\x82\x00\x3c\x00\x00", mqtt.MqttError),  # username missing
        (b"\x00\x04MQTT\x04\x02\x00\x3c\x00\x00\xff", mqtt.MqttError),  # trailing byte
        (b"\x00\x04MQTT\x04\x02\x00\x3c\x00\x02\xff\xfe", mqtt.MqttError),  # not UTF-8
        (b"\x00\x04MQTT\x04\x12\x00\x3c\x00\x00", mqtt.MqttError),  # will QoS without a will
    ],
)
def test_bad_connect(body: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        mqtt.parse_connect(body)


async def test_publish_qos0_and_qos1() -> None:
    packet = await read(mqtt.publish("devices/p2p/aa", b'{"type":"alert"}'))
    assert mqtt.parse_publish(packet) == mqtt.Publish("devices/p2p/aa", b'{"type":"alert"}')
    qos1 = await read(b"\x32\x0a\x00\x01t\x00\x05hello")
    assert mqtt.parse_publish(qos1) == mqtt.Publish("t", b"hello", 1, 5)
    for bad in (b"\x36\x05\x00\x01t\x00\x01", b"\x32\x05\x00\x01t\x00\x00", b"\x30\x03\x00\x01#"):
        with pytest.raises(mqtt.MqttError):
            mqtt.parse_publish(await read(bad))


async def test_subscribe_answered() -> None:
    packet = await read(b"\x82\x0c\x00\x07\x00\x03a/b\x01\x00\x01c\x00")
    assert mqtt.parse_subscription(packet) == (7, 2)
    assert mqtt.suback(7, 2) == b"\x90\x04\x00\x07\x00\x00"
    with pytest.raises(mqtt.MqttError):
        await read(b"\x80\x00")  # SUBSCRIBE's flags must be 0010


async def test_header_limits() -> None:
    with pytest.raises(mqtt.MqttError):
        await read(b"\x30\xff\xff\xff\xff\x01")
    with pytest.raises(MessageTooBigError):
        await read(b"\x30\xff\xff\xff\x7f", limit=100)
    with pytest.raises(mqtt.MqttError):
        await read(b"\x00\x00")  # type 0 is reserved
    with pytest.raises(mqtt.MqttError):
        await read(b"\xc1\x00")  # PINGREQ with flags
    with pytest.raises(asyncio.IncompleteReadError):
        await read(b"\x30\x05\x00")


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(
    topic=st.text(min_size=1, max_size=50).filter(
        lambda t: "\0" not in t and "+" not in t and "#" not in t
    ),
    payload=st.binary(max_size=300),
)
def test_publish_round_trips(topic: str, payload: bytes) -> None:
    packet = asyncio.run(read(mqtt.publish(topic, payload)))
    assert mqtt.parse_publish(packet) == mqtt.Publish(topic, payload)


@settings(max_examples=500, deadline=None, derandomize=True, database=None)
@given(data=st.binary(max_size=64))
def test_garbage_raises_only_protocol_errors(data: bytes) -> None:
    async def parse() -> None:
        try:
            packet = await read(data)
            if packet.type is PacketType.CONNECT:
                mqtt.parse_connect(packet.body)
            elif packet.type is PacketType.PUBLISH:
                mqtt.parse_publish(packet)
            elif packet.type in (PacketType.SUBSCRIBE, PacketType.UNSUBSCRIBE):
                mqtt.parse_subscription(packet)
        except (mqtt.MqttError, MessageTooBigError, asyncio.IncompleteReadError):
            pass

    asyncio.run(parse())
