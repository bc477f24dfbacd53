"""Typed JSON messages in both directions, and the one parser that checks them.

Shapes follow the firmware (protocol.md §3.2, §3.3, §4): every message is an object with a string
`type`; device messages carry `session_id`. `parse_device_message` and `parse_server_message` turn
text into a message or raise a `ProtocolError` subclass, never anything else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
import json
from typing import Any, ClassVar, Final, Self

from .const import (
    DEVICE_CHANNELS,
    DEVICE_FRAME_DURATION_MS,
    DEVICE_SAMPLE_RATE,
    MAX_JSON_DEPTH,
    MAX_TEXT_MESSAGE_BYTES,
    OPUS_FRAME_DURATIONS_MS,
    OPUS_SAMPLE_RATES,
    REPLY_FRAME_DURATION_MS,
    REPLY_SAMPLE_RATE,
)
from .errors import (
    MalformedMcpError,
    MalformedMessageError,
    MessageTooBigError,
    UnknownMessageTypeError,
    UnsupportedAudioError,
)

type JsonObject = dict[str, Any]


class ListenState(StrEnum):
    """`listen` states a device sends."""

    START = "start"
    STOP = "stop"
    DETECT = "detect"


class ListenMode(StrEnum):
    """Who ends an utterance (protocol.md §1.4)."""

    AUTO = "auto"  # the server, by voice activity detection
    MANUAL = "manual"  # the device, with `listen stop` (push to talk)
    REALTIME = "realtime"  # the server; the microphone stays open while the reply plays


class TtsState(StrEnum):
    """`tts` states the server sends."""

    START = "start"
    SENTENCE_START = "sentence_start"
    STOP = "stop"


# --- field readers -------------------------------------------------------------------------------


def _field(data: JsonObject, key: str, kind: type | tuple[type, ...], *, required: bool) -> Any:
    value = data.get(key)
    if value is None:
        if required:
            raise MalformedMessageError(f"'{data.get('type')}' message lacks '{key}'")
        return None
    # bool is an int in Python; a JSON true is never a valid number here.
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _kinds(kind)):
        raise MalformedMessageError(f"'{data.get('type')}' field '{key}' has the wrong type")
    return value


def _kinds(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _str(data: JsonObject, key: str, *, required: bool = False) -> str | None:
    value: str | None = _field(data, key, str, required=required)
    return value


def _int(data: JsonObject, key: str, *, required: bool = False) -> int | None:
    value: int | float | None = _field(data, key, (int, float), required=required)
    return None if value is None else int(value)


def _object(data: JsonObject, key: str, *, required: bool = False) -> JsonObject | None:
    value: JsonObject | None = _field(data, key, dict, required=required)
    return value


def _enum[E: StrEnum](data: JsonObject, key: str, enum: type[E], *, required: bool) -> E | None:
    value = _str(data, key, required=required)
    if value is None:
        return None
    try:
        return enum(value)
    except ValueError:
        raise MalformedMessageError(
            f"'{data.get('type')}' field '{key}' has unknown value {value!r}"
        ) from None


# --- shared parts --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AudioParams:
    """Opus stream parameters as the hello messages describe them."""

    format: str = "opus"
    sample_rate: int = DEVICE_SAMPLE_RATE
    channels: int = DEVICE_CHANNELS
    frame_duration: int = DEVICE_FRAME_DURATION_MS

    @classmethod
    def from_dict(cls, data: JsonObject | None, *, default: AudioParams) -> AudioParams:
        """Read `audio_params`, taking absent members from `default`."""
        if data is None:
            return default
        data = {"type": "audio_params", **data}
        return cls(
            format=_str(data, "format") or default.format,
            sample_rate=_int(data, "sample_rate") or default.sample_rate,
            channels=_int(data, "channels") or default.channels,
            frame_duration=_int(data, "frame_duration") or default.frame_duration,
        )

    def to_dict(self) -> JsonObject:
        """Return the wire form."""
        return {
            "format": self.format,
            "sample_rate": self.sample_rate,
            "channels": self.channels,
            "frame_duration": self.frame_duration,
        }

    def check_decodable(self) -> None:
        """Raise `UnsupportedAudioError` unless this is a mono Opus stream we can decode."""
        if self.format != "opus":
            raise UnsupportedAudioError(f"unsupported audio format {self.format!r}")
        if self.channels != 1:
            raise UnsupportedAudioError(f"unsupported channel count {self.channels}")
        if self.sample_rate not in OPUS_SAMPLE_RATES:
            raise UnsupportedAudioError(f"unsupported Opus sample rate {self.sample_rate}")
        if self.frame_duration not in OPUS_FRAME_DURATIONS_MS:
            raise UnsupportedAudioError(f"unsupported frame duration {self.frame_duration} ms")


DEVICE_AUDIO = AudioParams()
REPLY_AUDIO = AudioParams(sample_rate=REPLY_SAMPLE_RATE, frame_duration=REPLY_FRAME_DURATION_MS)


class Message:
    """A protocol message: `TYPE` on the wire, `to_dict()` out, `from_dict()` in."""

    TYPE: ClassVar[str]

    @classmethod
    def from_dict(cls, data: JsonObject) -> Self:
        """Build the message from a parsed JSON object whose `type` is `TYPE`."""
        raise NotImplementedError

    def fields(self) -> JsonObject:
        """Return the members other than `type`, without absent (None) ones."""
        raise NotImplementedError

    def to_dict(self) -> JsonObject:
        """Return the wire form."""
        return {"type": self.TYPE} | {k: v for k, v in self.fields().items() if v is not None}

    def to_json(self, session_id: str | None = None) -> str:
        """Return compact JSON text, UTF-8 kept as is (the firmware shows Chinese text).

        Server messages carry the session id: the firmware ignores it, other clients read it.
        """
        data = self.to_dict()
        if session_id is not None:
            data["session_id"] = session_id
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


# --- device -> server ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientHello(Message):
    """The first message a device sends on a new channel."""

    TYPE: ClassVar[str] = "hello"
    version: int = 1
    transport: str = "websocket"
    features: JsonObject = field(default_factory=dict)
    audio_params: AudioParams = DEVICE_AUDIO
    text_font: JsonObject | None = None

    @classmethod
    def from_dict(cls, data: JsonObject) -> Self:
        """Read a client hello."""
        return cls(
            version=_int(data, "version") or 1,
            transport=_str(data, "transport") or "websocket",
            features=_object(data, "features") or {},
            audio_params=AudioParams.from_dict(_object(data, "audio_params"), default=DEVICE_AUDIO),
            text_font=_object(data, "text_font"),
        )

    def fields(self) -> JsonObject:
        """Return the members other than `type`."""
        return {
            "version": self.version,
            "transport": self.transport,
            "features": self.features,
            "audio_params": self.audio_params.to_dict(),
            "text_font": self.text_font,
        }

    @property
    def supports_mcp(self) -> bool:
        """Whether the device runs an MCP server (always, on current firmware)."""
        return self.features.get("mcp") is True


@dataclass(frozen=True, slots=True)
class Listen(Message):
    """The device starts or stops listening, or heard its wake word."""

    TYPE: ClassVar[str] = "listen"
    state: ListenState
    mode: ListenMode | None = None
    text: str | None = None
    session_id: str | None = None

    @classmethod
    def from_dict(cls, data: JsonObject) -> Self:
        """Read a listen message."""
        state = _enum(data, "state", ListenState, required=True)
        assert state is not None
        return cls(
            state=state,
            mode=_enum(data, "mode", ListenMode, required=False),
            text=_str(data, "text"),
            session_id=_str(data, "session_id"),
        )

    def fields(self) -> JsonObject:
        """Return the members other than `type`."""
        return {
            "session_id": self.session_id,
            "state": self.state,
            "mode": self.mode,
            "text": self.text,
        }


@dataclass(frozen=True, slots=True)
class Abort(Message):
    """The user interrupted the reply (button, or wake word while speaking)."""

    TYPE: ClassVar[str] = "abort"
    reason: str | None = None
    session_id: str | None = None

    @classmethod
    def from_dict(cls, data: JsonObject) -> Self:
        """Read an abort message."""
        return cls(reason=_str(data, "reason"), session_id=_str(data, "session_id"))

    def fields(self) -> JsonObject:
        """Return the members other than `type`."""
        return {"session_id": self.session_id, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class Mcp(Message):
    """A JSON-RPC message to or from the device's MCP server."""

    TYPE: ClassVar[str] = "mcp"
    payload: JsonObject
    session_id: str | None = None

    @classmethod
    def from_dict(cls, data: JsonObject) -> Self:
        """Read an MCP envelope; one whose `payload` is not an object is dropped, not fatal."""
        payload = data.get("payload")
        if not isinstance(payload, dict):
            raise MalformedMcpError("'mcp' message without a payload object")
        return cls(payload=payload, session_id=_str(data, "session_id"))

    def fields(self) -> JsonObject:
        """Return the members other than `type`."""
        return {"session_id": self.session_id, "payload": self.payload}


@dataclass(frozen=True, slots=True)
class Goodbye(Message):
    """The channel ends (MQTT only; ignored by the firmware over WebSocket)."""

    TYPE: ClassVar[str] = "goodbye"
    session_id: str | None = None

    @classmethod
    def from_dict(cls, data: JsonObject) -> Self:
        """Read a goodbye message."""
        return cls(session_id=_str(data, "session_id"))

    def fields(self) -> JsonObject:
        """Return the members other than `type`."""
        return {"session_id": self.session_id}


# --- server -> device ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerHello(Message):
    """The server's answer to the client hello; `transport` must be present (protocol.md §3.3)."""

    TYPE: ClassVar[str] = "hello"
    session_id: str
    audio_params: AudioParams = REPLY_AUDIO
    transport: str = "websocket"

    @classmethod
    def from_dict(cls, data: JsonObject) -> Self:
        """Read a server hello (as the device does)."""
        transport = _str(data, "transport", required=True)
        assert transport is not None
        return cls(
            session_id=_str(data, "session_id") or "",
            audio_params=AudioParams.from_dict(_object(data, "audio_params"), default=REPLY_AUDIO),
            transport=transport,
        )

    def fields(self) -> JsonObject:
        """Return the members other than `type`."""
        return {
            "transport": self.transport,
            "session_id": self.session_id,
            "audio_params": self.audio_params.to_dict(),
        }


@dataclass(frozen=True, slots=True)
class Stt(Message):
    """What the user said, shown on the device."""

    TYPE: ClassVar[str] = "stt"
    text: str

    @classmethod
    def from_dict(cls, data: JsonObject) -> Self:
        """Read an stt message."""
        return cls(text=_str(data, "text", required=True) or "")

    def fields(self) -> JsonObject:
        """Return the members other than `type`."""
        return {"text": self.text}


# The emoji of each emotion the firmware knows (protocol.md §4.2); clients without faces show it.
EMOTION_EMOJI: Final = {
    "neutral": "😶",
    "happy": "🙂",
    "laughing": "😆",
    "funny": "😂",
    "sad": "😔",
    "angry": "😠",
    "crying": "😭",
    "loving": "😍",
    "embarrassed": "😳",
    "surprised": "😯",
    "shocked": "😱",
    "thinking": "🤔",
    "winking": "😉",
    "cool": "😎",
    "relaxed": "😌",
    "delicious": "🤤",
    "kissy": "😘",
    "confident": "😏",
    "sleepy": "😴",
    "silly": "😜",
    "confused": "🙄",
}


@dataclass(frozen=True, slots=True)
class Llm(Message):
    """The assistant's mood: `emotion` sets the face on the device, `text` is its emoji."""

    TYPE: ClassVar[str] = "llm"
    emotion: str
    text: str | None = None

    @classmethod
    def from_dict(cls, data: JsonObject) -> Self:
        """Read an llm message."""
        return cls(emotion=_str(data, "emotion", required=True) or "", text=_str(data, "text"))

    def fields(self) -> JsonObject:
        """Return the members other than `type`."""
        return {
            "emotion": self.emotion,
            "text": self.text or EMOTION_EMOJI.get(self.emotion, EMOTION_EMOJI["neutral"]),
        }


@dataclass(frozen=True, slots=True)
class Tts(Message):
    """Reply playback: start, the text of each sentence, stop."""

    TYPE: ClassVar[str] = "tts"
    state: TtsState
    text: str | None = None

    @classmethod
    def from_dict(cls, data: JsonObject) -> Self:
        """Read a tts message."""
        state = _enum(data, "state", TtsState, required=True)
        assert state is not None
        return cls(state=state, text=_str(data, "text"))

    def fields(self) -> JsonObject:
        """Return the members other than `type`."""
        return {"state": self.state, "text": self.text}


@dataclass(frozen=True, slots=True)
class Alert(Message):
    """A notice shown on the device with a sound; all three members must be strings."""

    TYPE: ClassVar[str] = "alert"
    status: str
    message: str
    emotion: str = "neutral"

    @classmethod
    def from_dict(cls, data: JsonObject) -> Self:
        """Read an alert."""
        return cls(
            status=_str(data, "status", required=True) or "",
            message=_str(data, "message", required=True) or "",
            emotion=_str(data, "emotion") or "neutral",
        )

    def fields(self) -> JsonObject:
        """Return the members other than `type`."""
        return {"status": self.status, "message": self.message, "emotion": self.emotion}


@dataclass(frozen=True, slots=True)
class System(Message):
    """A system command; the firmware knows only `reboot`."""

    TYPE: ClassVar[str] = "system"
    command: str

    @classmethod
    def from_dict(cls, data: JsonObject) -> Self:
        """Read a system command."""
        return cls(command=_str(data, "command", required=True) or "")

    def fields(self) -> JsonObject:
        """Return the members other than `type`."""
        return {"command": self.command}


type DeviceMessage = ClientHello | Listen | Abort | Mcp | Goodbye
type ServerMessage = ServerHello | Stt | Llm | Tts | Mcp | Alert | System | Goodbye

DEVICE_MESSAGE_TYPES: dict[str, type[DeviceMessage]] = {
    m.TYPE: m for m in (ClientHello, Listen, Abort, Mcp, Goodbye)
}
SERVER_MESSAGE_TYPES: dict[str, type[ServerMessage]] = {
    m.TYPE: m for m in (ServerHello, Stt, Llm, Tts, Mcp, Alert, System, Goodbye)
}


# --- parsing -------------------------------------------------------------------------------------


def load_json_object(text: str | bytes) -> JsonObject:
    """Decode one JSON object within the size and nesting limits."""
    if len(text) > MAX_TEXT_MESSAGE_BYTES:
        raise MessageTooBigError(
            f"text message of {len(text)} bytes exceeds {MAX_TEXT_MESSAGE_BYTES}"
        )
    try:
        data = json.loads(text)
    except RecursionError:
        raise MalformedMessageError("JSON nested too deeply") from None
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError
        raise MalformedMessageError(f"not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise MalformedMessageError("message is not a JSON object")
    if _depth(data) > MAX_JSON_DEPTH:
        raise MalformedMessageError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return data


def _depth(value: Any) -> int:
    """Return the nesting depth of a parsed JSON value, without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_JSON_DEPTH:
            break
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _parse[M: Message](text: str | bytes, registry: dict[str, type[M]]) -> M:
    return _from_dict(load_json_object(text), registry)


def _from_dict[M: Message](data: JsonObject, registry: dict[str, type[M]]) -> M:
    kind = data.get("type")
    if not isinstance(kind, str):
        raise MalformedMessageError("message has no string 'type'")
    message_class = registry.get(kind)
    if message_class is None:
        raise UnknownMessageTypeError(f"unknown message type {kind[:40]!r}")
    return message_class.from_dict(data)


def parse_device_message(text: str | bytes) -> DeviceMessage:
    """Parse a text message from a device."""
    return _parse(text, DEVICE_MESSAGE_TYPES)


def parse_server_message(text: str | bytes) -> ServerMessage:
    """Parse a text message from a server (what a device reads)."""
    return _parse(text, SERVER_MESSAGE_TYPES)


def device_message_from_dict(data: JsonObject) -> DeviceMessage:
    """Build a device message from its wire form, already decoded (a relayed one)."""
    return _from_dict(data, DEVICE_MESSAGE_TYPES)


def server_message_from_dict(data: JsonObject) -> ServerMessage:
    """Build a server message from its wire form, already decoded (a relayed one)."""
    return _from_dict(data, SERVER_MESSAGE_TYPES)
