"""The OTA check a device makes at every boot: request model and answer (protocol.md §2)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
import json
import re
from typing import Any, Final

from .const import DEFAULT_PROTOCOL_VERSION, MAX_OTA_BODY_BYTES
from .errors import OtaRequestError

type JsonObject = dict[str, Any]

MAC_PATTERN: Final = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
MAX_HEADER_VALUE_CHARS: Final = 128  # Client-Id is a UUID, User-Agent "<board>/<version>"


def normalize_device_id(value: str | None) -> str:
    """Return a device id (the MAC) in the firmware's form, lowercase and colon separated."""
    device_id = (value or "").strip().lower().replace("-", ":")
    if not MAC_PATTERN.match(device_id):
        raise OtaRequestError(f"Device-Id {device_id[:40]!r} is not a MAC address")
    return device_id


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        return None
    return value.strip()[:MAX_HEADER_VALUE_CHARS] or None


def _dig(data: JsonObject, *path: str) -> Any:
    """Return a nested member, or None if any step is missing or not an object."""
    value: Any = data
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _text(value: Any) -> str | None:
    return value[:MAX_HEADER_VALUE_CHARS] if isinstance(value, str) and value else None


@dataclass(frozen=True, slots=True)
class OtaRequest:
    """What a device tells about itself when it checks for updates."""

    device_id: str
    client_id: str | None = None
    firmware_version: str | None = None
    board_type: str | None = None
    board_name: str | None = None
    chip_model: str | None = None
    language: str | None = None
    user_agent: str | None = None
    activation_version: str | None = None
    serial_number: str | None = None
    remote: str | None = None  # the address the request came from
    origin: str | None = None  # the web page that sent it, if a browser did
    system_info: JsonObject = field(default_factory=dict, repr=False)

    @classmethod
    def from_http(
        cls, headers: Mapping[str, str], body: bytes, remote: str | None = None
    ) -> OtaRequest:
        """Read the request the firmware sends (headers of §2.2 and the system-info body)."""
        if len(body) > MAX_OTA_BODY_BYTES:
            raise OtaRequestError(f"body of {len(body)} bytes exceeds {MAX_OTA_BODY_BYTES}")
        info: Any = {}
        if body.strip():
            try:
                info = json.loads(body)
            except (ValueError, RecursionError):
                raise OtaRequestError("body is not valid JSON") from None
        if not isinstance(info, dict):
            raise OtaRequestError("body is not a JSON object")
        device_id = _header(headers, "Device-Id") or _text(info.get("mac_address"))
        return cls(
            device_id=normalize_device_id(device_id),
            client_id=_header(headers, "Client-Id") or _text(info.get("uuid")),
            firmware_version=_text(_dig(info, "application", "version")),
            board_type=_text(_dig(info, "board", "type")),
            board_name=_text(_dig(info, "board", "name")),
            chip_model=_text(info.get("chip_model_name")),
            language=_header(headers, "Accept-Language") or _text(info.get("language")),
            user_agent=_header(headers, "User-Agent"),
            activation_version=_header(headers, "Activation-Version"),
            serial_number=_header(headers, "Serial-Number"),
            remote=remote,
            origin=_header(headers, "Origin"),
            system_info=info,
        )


@dataclass(frozen=True, slots=True)
class WebsocketConfig:
    """Where and how a device should open its audio channel.

    `token` None leaves the `token` key out, so the device keeps the one in its NVS (§2.4).
    """

    url: str
    token: str | None = ""
    version: int = DEFAULT_PROTOCOL_VERSION


@dataclass(frozen=True, slots=True, repr=False)
class MqttConfig:
    """Where an always-connected device keeps its MQTT connection (protocol.md §7.1).

    Its presence makes the firmware use MQTT+UDP instead of the WebSocket (§2.4). Every key
    name fits the device's 15-character NVS limit.
    """

    endpoint: str  # host:port, never port 8883 (the firmware dials that one with TLS)
    client_id: str
    username: str
    password: str
    keepalive: int
    publish_topic: str
    subscribe_topic: str  # stored by the firmware, never used: it does not subscribe

    def __repr__(self) -> str:
        """Show where, never the password."""
        return f"MqttConfig(endpoint={self.endpoint!r}, username={self.username!r})"

    def to_dict(self) -> JsonObject:
        """The OTA answer's `mqtt` block."""
        return {
            "endpoint": self.endpoint,
            "client_id": self.client_id,
            "username": self.username,
            "password": self.password,
            "keepalive": self.keepalive,
            "publish_topic": self.publish_topic,
            "subscribe_topic": self.subscribe_topic,
        }


@dataclass(frozen=True, slots=True)
class Activation:
    """The device must be bound first: it speaks and shows `code` and polls `/activate`."""

    code: str
    message: str
    challenge: str


@dataclass(frozen=True, slots=True)
class OtaAnswer:
    """What a gate tells a device at boot: its channel, and the activation to do first, if any.

    Both go out together: clients other than the firmware (py-xiaozhi, xiaozhi-sdk, the reference
    server's web page) read `websocket` from every answer; the firmware runs its activation loop
    while `activation` is present and checks again afterwards.
    """

    websocket: WebsocketConfig
    activation: Activation | None = None
    mqtt: MqttConfig | None = None  # for a bound device switched to the always-connected mode


def build_ota_response(
    request: OtaRequest,
    answer_to: OtaAnswer,
    *,
    now_ms: int,
    timezone_offset_minutes: int,
) -> JsonObject:
    """Return the answer to an OTA check.

    It echoes the running firmware version with an empty URL (never an upgrade). An `mqtt`
    block, which wins over the WebSocket, goes only to devices the gate switched to MQTT+UDP.
    The channel always has `url` and `version` (values persist in the device's NVS) and
    `token` unless the gate leaves it out.
    """
    answer: JsonObject = {
        "server_time": {"timestamp": now_ms, "timezone_offset": timezone_offset_minutes},
    }
    channel = answer_to.websocket
    websocket: JsonObject = {"url": channel.url, "version": channel.version}
    if channel.token is not None:
        websocket["token"] = channel.token
    answer["websocket"] = websocket
    if answer_to.mqtt is not None:
        answer["mqtt"] = answer_to.mqtt.to_dict()
    if (activation := answer_to.activation) is not None:
        answer["activation"] = {
            "code": activation.code,
            "message": activation.message,
            "challenge": activation.challenge,
        }
    if request.firmware_version is not None:
        answer["firmware"] = {"version": request.firmware_version, "url": ""}
    return answer
