"""The link between the add-on, which serves the devices, and Home Assistant, which answers them.

One WebSocket, opened by the integration to the add-on's `LINK_PATH` with the shared secret as a
bearer token. JSON text frames carry calls (the add-on asks HA's `DeviceGate`), session events and
commands; binary frames carry audio: a kind byte, the channel (and for reply audio the reply) as
big-endian 32-bit numbers, then 16-bit mono PCM. This module is the wire format both ends share.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict
import json
import logging
import struct
from typing import Any, Final

from .errors import ProtocolError
from .messages import JsonObject
from .ota import Activation, MqttConfig, OtaAnswer, OtaRequest, WebsocketConfig
from .session import DeviceIdentity

_LOGGER = logging.getLogger(__name__)

LINK_PATH: Final = "/xiaozhi/link"
LINK_STATUS_PATH: Final = "/xiaozhi/link/status"  # checks the URL and secret without linking
LINK_VERSION: Final = 2  # 2: microphone audio carries its windows' voice scores
LINK_SERVICE: Final = "xiaozhi"  # the add-on's Supervisor discovery service
LINK_HEARTBEAT_S: Final = 10.0  # HA pings the add-on this often, the add-on answers (a pong)
LINK_IDLE_TIMEOUT_S: Final = 3 * LINK_HEARTBEAT_S  # either end hearing nothing this long: gone
LINK_HELLO_TIMEOUT_S: Final = 10.0
LINK_CALL_TIMEOUT_S: Final = 10.0  # HA answers a gate call (OTA check, channel) within this
MAX_LINK_MESSAGE_BYTES: Final = 1024 * 1024  # a reply update or an OTA check is a few KiB
LINK_AUDIO_FRAME_BYTES: Final = 32 * 1024  # reply audio is sent in frames of at most this
# Frames written per pass of the loop: a send that does not block never yields, and a backlog
# of a hundred devices' microphone audio would hold the loop (and their reply pacing) for ms.
LINK_SEND_SLICE: Final = 16
# Frames handled per pass of the loop: frames already read come without a yield, and each
# device's microphone audio runs its voice detection there, so a long read held HA's loop.
LINK_RECEIVE_SLICE: Final = 8
MAX_LINK_QUEUE: Final = 2000  # frames waiting to be sent; a peer this far behind is dropped
# Microphone audio waiting beyond this is dropped instead (a peer that is slow, not stuck): turns
# lose audio, the link and every channel on it stay. It outlasts a pause of HA's loop: a full
# garbage collection of HA's heap took up to 0.25 s at 200 devices, whose microphones send 3,300
# frames a second (at 500, such a pause lost 11,000 frames and 54 turns in a 15 s run). ~3 MB.
MAX_LINK_AUDIO_BACKLOG: Final = 1500

MIC_AUDIO: Final = ord("m")  # device microphone PCM (16 kHz), add-on -> HA
SCORED_MIC_AUDIO: Final = ord("s")  # the same, after the voice scores of the windows it ends
REPLY_AUDIO: Final = ord("r")  # reply PCM (the reply rate), HA -> add-on
_MIC_HEADER = struct.Struct(">BI")
_SCORES_HEADER = struct.Struct(">BIB")  # kind, channel, scored windows that follow
_SCORED_WINDOW = struct.Struct(">ff")  # speech probability, level (dB)
MAX_SCORED_WINDOWS: Final = 255  # a frame's window count is one byte (a 60 ms frame has 1-2)
_REPLY_HEADER = struct.Struct(">BII")


class Outbox:
    """Sends one link's frames in order, queued from callbacks and coroutines alike.

    A peer that stops reading is not waited for: past `MAX_LINK_QUEUE` frames, `overflow` is
    called (the owner closes the link) and later frames are dropped.
    """

    def __init__(
        self,
        send_text: Callable[[str], Awaitable[None]],
        send_bytes: Callable[[bytes], Awaitable[None]],
        overflow: Callable[[], None],
    ) -> None:
        """Send through these functions of the link's WebSocket."""
        self._send_text = send_text
        self._send_bytes = send_bytes
        self._overflow = overflow
        self._queue: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        self._full = False
        self.audio_dropped = 0
        self._task = asyncio.get_running_loop().create_task(self._run(), name="xiaozhi link out")

    def put(self, message: dict[str, Any]) -> None:
        """Queue one JSON message."""
        self._put(json.dumps(message, ensure_ascii=False, separators=(",", ":")))

    def put_bytes(self, frame: bytes, *, droppable: bool = False) -> None:
        """Queue one binary frame; a `droppable` one is dropped while the peer is behind."""
        if droppable and self._queue.qsize() >= MAX_LINK_AUDIO_BACKLOG:
            if not self.audio_dropped:
                _LOGGER.warning(
                    "Link peer is %d frames behind; dropping microphone audio",
                    MAX_LINK_AUDIO_BACKLOG,
                )
            self.audio_dropped += 1
            return
        self._put(frame)

    def _put(self, frame: str | bytes) -> None:
        if self._full:
            return
        if self._queue.qsize() >= MAX_LINK_QUEUE:
            self._full = True
            _LOGGER.warning("Link peer is %d frames behind; dropping the link", MAX_LINK_QUEUE)
            self._overflow()
            return
        self._queue.put_nowait(frame)

    async def _run(self) -> None:
        sent = 0
        while (frame := await self._queue.get()) is not None:
            try:
                if isinstance(frame, str):
                    await self._send_text(frame)
                else:
                    await self._send_bytes(frame)
            except ConnectionError:
                return  # the link is closing; its owner ends it
            sent += 1
            if sent % LINK_SEND_SLICE == 0:
                await asyncio.sleep(0)

    async def close(self) -> None:
        """Stop sending (what is queued is dropped)."""
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


class LinkEnd:
    """What both ends of the link share: sending while linked, dropping while not."""

    def __init__(self) -> None:
        """Start unlinked."""
        self._outbox: Outbox | None = None

    @property
    def linked(self) -> bool:
        """Whether the link is up now."""
        return self._outbox is not None

    def send(self, message: dict[str, Any]) -> None:
        """Send one message to the other end, if linked."""
        if self._outbox is not None:
            self._outbox.put(message)

    def send_bytes(self, frame: bytes, *, droppable: bool = False) -> None:
        """Send one binary frame to the other end, if linked (`droppable`: when not behind)."""
        if self._outbox is not None:
            self._outbox.put_bytes(frame, droppable=droppable)


def pack_mic_audio(
    channel: int, pcm: bytes, scored: Sequence[tuple[float, float]] | None = None
) -> bytes:
    """Frame microphone audio of a channel, with the scores of the windows it ends, if scored.

    Scores are `vad.ScoredWindow`s; audio sent without them is scored by HA.
    """
    if scored is None:
        return _MIC_HEADER.pack(MIC_AUDIO, channel) + pcm
    if len(scored) > MAX_SCORED_WINDOWS:
        raise ValueError(f"{len(scored)} scored windows in one frame")
    header = _SCORES_HEADER.pack(SCORED_MIC_AUDIO, channel, len(scored))
    return header + b"".join(_SCORED_WINDOW.pack(*window) for window in scored) + pcm


def pack_reply_audio(channel: int, reply: int, pcm: bytes) -> bytes:
    """Frame reply audio of one reply on a channel."""
    return _REPLY_HEADER.pack(REPLY_AUDIO, channel, reply) + pcm


def unpack_mic_audio(frame: bytes) -> tuple[int, bytes, list[tuple[float, float]] | None]:
    """Return the channel, PCM and windows' scores (None: not scored) of a microphone frame."""
    if len(frame) >= _MIC_HEADER.size and frame[0] == MIC_AUDIO:
        _, channel = _MIC_HEADER.unpack_from(frame)
        return channel, frame[_MIC_HEADER.size :], None
    if len(frame) < _SCORES_HEADER.size or frame[0] != SCORED_MIC_AUDIO:
        raise ProtocolError("not a microphone audio frame")
    _, channel, count = _SCORES_HEADER.unpack_from(frame)
    pcm_at = _SCORES_HEADER.size + count * _SCORED_WINDOW.size
    if len(frame) < pcm_at:
        raise ProtocolError("microphone audio frame cut short in its scores")
    scored: list[tuple[float, float]] = [
        _SCORED_WINDOW.unpack_from(frame, _SCORES_HEADER.size + k * _SCORED_WINDOW.size)
        for k in range(count)
    ]
    return channel, frame[pcm_at:], scored


def unpack_reply_audio(frame: bytes) -> tuple[int, int, bytes]:
    """Return the channel, reply and PCM of a reply audio frame."""
    if len(frame) < _REPLY_HEADER.size or frame[0] != REPLY_AUDIO:
        raise ProtocolError("not a reply audio frame")
    _, channel, reply = _REPLY_HEADER.unpack_from(frame)
    return channel, reply, frame[_REPLY_HEADER.size :]


def identity_to_dict(device: DeviceIdentity) -> JsonObject:
    """A device's identity on the wire."""
    return asdict(device)


def identity_from_dict(data: Any) -> DeviceIdentity:
    """Read a device's identity."""
    try:
        return DeviceIdentity(
            device_id=str(data["device_id"]),
            client_id=_optional_str(data.get("client_id")),
            protocol_version=int(data.get("protocol_version", 1)),
            remote=_optional_str(data.get("remote")),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ProtocolError(f"bad device identity: {err}") from None


def ota_request_to_dict(request: OtaRequest) -> JsonObject:
    """An OTA check on the wire."""
    return asdict(request)


def ota_request_from_dict(data: Any) -> OtaRequest:
    """Read an OTA check."""
    try:
        return OtaRequest(**data)
    except TypeError as err:
        raise ProtocolError(f"bad OTA request: {err}") from None


def ota_answer_to_dict(answer: OtaAnswer) -> JsonObject:
    """A gate's OTA answer on the wire."""
    return {
        "websocket": asdict(answer.websocket),
        "activation": None if answer.activation is None else asdict(answer.activation),
        "mqtt": None if answer.mqtt is None else answer.mqtt.to_dict(),
    }


def ota_answer_from_dict(data: Any) -> OtaAnswer:
    """Read a gate's OTA answer."""
    try:
        activation, mqtt = data.get("activation"), data.get("mqtt")
        return OtaAnswer(
            WebsocketConfig(**data["websocket"]),
            activation=None if activation is None else Activation(**activation),
            mqtt=None if mqtt is None else MqttConfig(**mqtt),
        )
    except (KeyError, TypeError, AttributeError) as err:
        raise ProtocolError(f"bad OTA answer: {err}") from None


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)
