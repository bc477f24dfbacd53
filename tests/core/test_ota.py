"""Tests for the OTA request model and answer."""

from __future__ import annotations

import json

import pytest

from custom_components.xiaozhi.core.errors import OtaRequestError
from custom_components.xiaozhi.core.ota import (
    Activation,
    OtaAnswer,
    OtaRequest,
    WebsocketConfig,
    build_ota_response,
    normalize_device_id,
)
from tools.emulator import DeviceEmulator


def firmware_request() -> tuple[dict[str, str], bytes]:
    device = DeviceEmulator("http://x/xiaozhi/ota/", device_id="aa:bb:cc:dd:ee:ff")
    return device.ota_headers(), json.dumps(device.system_info()).encode()


def test_firmware_request_is_read() -> None:
    headers, body = firmware_request()
    request = OtaRequest.from_http(headers, body)
    assert request.device_id == "aa:bb:cc:dd:ee:ff"
    assert request.firmware_version == "2.0.3"
    assert request.board_type == "xiaozhi-emulator"
    assert request.chip_model == "esp32s3"
    assert request.user_agent == "xiaozhi-emulator/2.0.3"


def test_answer_shape() -> None:
    headers, body = firmware_request()
    request = OtaRequest.from_http(headers, body)
    answer = build_ota_response(
        request,
        OtaAnswer(WebsocketConfig(url="ws://192.168.1.10:8123/xiaozhi/v1/", token="t", version=2)),
        now_ms=1786500000000,
        timezone_offset_minutes=480,
    )
    assert answer == {
        "server_time": {"timestamp": 1786500000000, "timezone_offset": 480},
        "firmware": {"version": "2.0.3", "url": ""},
        "websocket": {"url": "ws://192.168.1.10:8123/xiaozhi/v1/", "token": "t", "version": 2},
    }
    assert "mqtt" not in answer  # it would win over the WebSocket
    assert all(len(key) <= 15 for block in answer.values() for key in block)  # NVS key limit


def test_answer_with_activation_and_without_token() -> None:
    headers, body = firmware_request()
    request = OtaRequest.from_http(headers, body)
    channel = WebsocketConfig(url="ws://h/xiaozhi/v1/", token=None)
    answer = build_ota_response(
        request,
        OtaAnswer(channel, Activation(code="123456", message="m", challenge="c")),
        now_ms=0,
        timezone_offset_minutes=0,
    )
    # Both blocks (clients other than the firmware read `websocket` first); no `token` key,
    # so a device keeps the one in its NVS.
    assert answer["websocket"] == {"url": "ws://h/xiaozhi/v1/", "version": 1}
    assert answer["activation"] == {"code": "123456", "message": "m", "challenge": "c"}


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({}, b"{}"),  # no Device-Id, no mac_address
        ({"Device-Id": "not-a-mac"}, b"{}"),
        ({"Device-Id": "aa:bb:cc:dd:ee:ff"}, b"{not json"),
        ({"Device-Id": "aa:bb:cc:dd:ee:ff"}, b"[1]"),
        ({"Device-Id": "aa:bb:cc:dd:ee:ff"}, b"[" * 100_000),
    ],
)
def test_bad_requests(headers: dict[str, str], body: bytes) -> None:
    with pytest.raises(OtaRequestError):
        OtaRequest.from_http(headers, body)


def test_device_id_normalized() -> None:
    assert normalize_device_id(" AA-BB-CC-DD-EE-FF ") == "aa:bb:cc:dd:ee:ff"
