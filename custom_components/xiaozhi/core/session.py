"""One conversation channel with a device, whatever carries it.

A `DeviceSession` does the hello handshake, tracks the listen state machine, decodes microphone
audio for its handler, sends stt/llm/tts/mcp messages and plays replies paced at real time. It talks
through a `DeviceLink` and reports to the `SessionHandler` its gate resolved at connect.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass
from enum import StrEnum
import logging
import time
from typing import TYPE_CHECKING, Protocol
import uuid

from .codec import OpusDecoder, OpusEncoder, PcmFramer
from .const import (
    DEVICE_SAMPLE_RATE,
    HELLO_TIMEOUT_S,
    IDLE_TIMEOUT_S,
    MAX_AUDIO_FRAME_BURST,
    MAX_AUDIO_FRAMES_PER_S,
    MAX_TEXT_MESSAGE_BURST,
    MAX_TEXT_MESSAGES_PER_S,
    PLAYBACK_LEAD_FRAMES,
    TTS_START_SETTLE_S,
    CloseCode,
)
from .errors import CodecError, FloodError, ProtocolError
from .messages import (
    REPLY_AUDIO,
    Abort,
    Alert,
    AudioParams,
    ClientHello,
    Goodbye,
    JsonObject,
    Listen,
    ListenMode,
    ListenState,
    Llm,
    Mcp,
    Message,
    ServerHello,
    Stt,
    Tts,
    TtsState,
    parse_device_message,
)
from .timings import CodecStats, Stage, TurnTimings

if TYPE_CHECKING:
    from .host import SessionHandler

_LOGGER = logging.getLogger(__name__)

type ReplyChunk = bytes | str
"""Reply playback input: PCM (16-bit mono at the reply rate) or the text of the next sentence."""


class DeviceLink(Protocol):
    """The transport a session talks through; it frames audio for its own wire."""

    @property
    def closed(self) -> bool:
        """Whether the link can no longer send."""

    async def send_text(self, text: str) -> None:
        """Send one JSON message."""

    async def send_audio(self, packet: bytes, timestamp: int) -> None:
        """Send one Opus packet."""

    async def close(self, code: CloseCode, reason: str) -> None:
        """Close the channel."""


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    """Who is on the other end, from the connection's headers."""

    device_id: str  # the MAC, lowercase and colon separated
    client_id: str | None = None
    protocol_version: int = 1
    remote: str | None = None


@dataclass(frozen=True, slots=True)
class SessionStarted:
    """The hello is done; the session may send."""


@dataclass(frozen=True, slots=True)
class SessionEnded:
    """The channel closed (reported once, only for sessions that started)."""


type SessionEvent = SessionStarted | SessionEnded | Listen | Abort | Mcp
"""What a session reports to its handler, besides microphone audio."""


class SessionState(StrEnum):
    """Where the conversation is, as the server sees the device."""

    CONNECTING = "connecting"  # waiting for the client hello
    IDLE = "idle"
    LISTENING = "listening"
    SPEAKING = "speaking"
    CLOSED = "closed"


class PlaybackClock:
    """Keeps reply audio no more than `lead` frames ahead of what the device has played."""

    def __init__(
        self,
        frame_seconds: float,
        lead_frames: int,
        time: Callable[[], float],
        not_before: float = 0.0,
    ) -> None:
        """Follow the device's playback on the `time` clock; send nothing before `not_before`."""
        self.frame_seconds = frame_seconds
        self._lead = lead_frames * frame_seconds
        self._time = time
        self._not_before = not_before
        self._played_until = 0.0

    async def wait_for_room(self) -> None:
        """Sleep until one more frame may be sent."""
        now = self._time()
        if now < self._not_before:
            await asyncio.sleep(self._not_before - now)
            return
        ahead = self._played_until - now
        if ahead > self._lead:
            await asyncio.sleep(ahead - self._lead)

    def frame_sent(self) -> None:
        """Account for one frame handed to the device."""
        self._played_until = max(self._played_until, self._time()) + self.frame_seconds

    async def drain(self) -> None:
        """Sleep until the device has played everything sent."""
        remaining = self._played_until - self._time()
        if remaining > 0:
            await asyncio.sleep(remaining)


class RateLimit:
    """A token bucket: `rate` events per second on average, bursts of up to `burst`."""

    def __init__(self, rate: float, burst: int, time: Callable[[], float]) -> None:
        """Start with a full bucket."""
        self.rate = rate
        self.burst = burst
        self._time = time
        self._tokens = float(burst)
        self._updated = time()

    def allow(self) -> bool:
        """Take one token; False if the bucket is empty."""
        now = self._time()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


class DeviceSession:
    """The server side of one device channel."""

    def __init__(
        self,
        link: DeviceLink,
        device: DeviceIdentity,
        handler: SessionHandler,
        *,
        reply_audio: AudioParams = REPLY_AUDIO,
    ) -> None:
        """Bind a session to its transport and handler; call `start()` once connected."""
        self.link = link
        self.device = device
        self.handler = handler
        self.reply_audio = reply_audio
        self.session_id = str(uuid.uuid4())
        self.state = SessionState.CONNECTING
        self.listen_mode: ListenMode | None = None
        self.hello: ClientHello | None = None
        self._loop = asyncio.get_running_loop()
        self._decoder: OpusDecoder | None = None
        self._encoder: OpusEncoder | None = None
        self.codec_stats = CodecStats()
        self._last_activity = self._loop.time()
        self._speaking_since = 0.0
        self._playback: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._warned: set[str] = set()
        self._ended = asyncio.Event()
        self._text_limit = RateLimit(
            MAX_TEXT_MESSAGES_PER_S, MAX_TEXT_MESSAGE_BURST, self._loop.time
        )
        self._audio_limit = RateLimit(
            MAX_AUDIO_FRAMES_PER_S, MAX_AUDIO_FRAME_BURST, self._loop.time
        )

    def __repr__(self) -> str:
        """Name the device and session in logs."""
        return f"<DeviceSession {self.device.device_id} {self.session_id} {self.state}>"

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the hello and idle timers."""
        self._last_activity = self._loop.time()
        self._watchdog = self._loop.create_task(
            self._watch_timeouts(), name=f"xiaozhi timeouts {self.device.device_id}"
        )

    @property
    def ready(self) -> bool:
        """Whether the hello handshake is done and the channel is open."""
        return self.state not in (SessionState.CONNECTING, SessionState.CLOSED)

    async def close(self, code: CloseCode = CloseCode.NORMAL, reason: str = "") -> None:
        """Stop playback and close the link."""
        self.stop_playback()
        if not self.link.closed:
            await self.link.close(code, reason)
        self.finish()

    def finish(self) -> None:
        """Release everything once the link is gone; tell the handler (once)."""
        if self.state is SessionState.CLOSED:
            return
        was_ready = self.ready
        self.state = SessionState.CLOSED
        self.stop_playback()
        if self._watchdog is not None and self._watchdog is not asyncio.current_task():
            self._watchdog.cancel()
        self._ended.set()
        if was_ready:
            self.handler.session_event(self, SessionEnded())

    async def wait_closed(self) -> None:
        """Wait until the session has ended."""
        await self._ended.wait()

    async def _watch_timeouts(self) -> None:
        """Close the channel if the hello does not come, or the device goes quiet."""
        while self.state is not SessionState.CLOSED:
            limit = IDLE_TIMEOUT_S if self.ready else HELLO_TIMEOUT_S
            if self.state is SessionState.SPEAKING:
                self._last_activity = self._loop.time()  # a reply is never idle time
            remaining = self._last_activity + limit - self._loop.time()
            if remaining > 0:
                await asyncio.sleep(remaining)
                continue
            if self.ready:
                _LOGGER.info("%s: closing after %.0f s without activity", self, limit)
                await self.close(CloseCode.IDLE_TIMEOUT, "idle timeout")
            else:
                _LOGGER.warning("%s: no hello within %.0f s", self, limit)
                await self.close(CloseCode.HELLO_TIMEOUT, "hello timeout")

    # --- input from the device -------------------------------------------------------------------

    async def handle_text(self, text: str | bytes) -> None:
        """Handle one JSON message; raises `ProtocolError` if it breaks the protocol."""
        self._last_activity = self._loop.time()
        if not self._text_limit.allow():
            raise FloodError(f"more than {MAX_TEXT_MESSAGES_PER_S:.0f} messages/s")
        try:
            message = parse_device_message(text)
        except ProtocolError as err:
            if err.fatal:
                raise
            self._warn_once(type(err).__name__, "%s: %s (ignored)", self, err)
            return
        if self.hello is None:
            if not isinstance(message, ClientHello):
                raise ProtocolError(f"expected hello first, got '{message.TYPE}'")
            await self._handle_hello(message)
            return
        match message:
            case ClientHello():
                self._warn_once("hello", "%s: second hello ignored", self)
            case Listen():
                self._handle_listen(message)
            case Abort():
                await self.abort_playback()
                self.handler.session_event(self, message)
            case Mcp():
                self.handler.session_event(self, message)
            case Goodbye():
                await self.close(CloseCode.NORMAL, "goodbye")

    def handle_audio(self, packet: bytes) -> None:
        """Decode one Opus packet from the microphone and hand the PCM to the handler."""
        if self._decoder is None:
            raise ProtocolError("audio before hello")
        self._last_activity = self._loop.time()
        if not self._audio_limit.allow():
            raise FloodError(f"more than {MAX_AUDIO_FRAMES_PER_S:.0f} audio frames/s")
        started = time.perf_counter()
        try:
            pcm = self._decoder.decode(packet)
        except CodecError as err:
            self._warn_once("codec", "%s: dropping undecodable audio: %s", self, err)
            return
        self.codec_stats.decode_s += time.perf_counter() - started
        self.codec_stats.frames_decoded += 1
        if pcm:
            self.handler.audio_received(self, pcm)

    async def _handle_hello(self, hello: ClientHello) -> None:
        hello.audio_params.check_decodable()
        self.hello = hello
        self._decoder = OpusDecoder(DEVICE_SAMPLE_RATE)
        await self.send(ServerHello(session_id=self.session_id, audio_params=self.reply_audio))
        self.state = SessionState.IDLE
        _LOGGER.debug("%s: hello done (protocol v%s)", self, self.device.protocol_version)
        self.handler.session_event(self, SessionStarted())

    def _handle_listen(self, message: Listen) -> None:
        if message.state is ListenState.START:
            self.listen_mode = message.mode or ListenMode.AUTO
            self.state = SessionState.LISTENING
        elif message.state is ListenState.STOP:
            self.state = SessionState.IDLE
        self.handler.session_event(self, message)

    def _warn_once(self, key: str, msg: str, *args: object) -> None:
        level = logging.DEBUG if key in self._warned else logging.WARNING
        self._warned.add(key)
        _LOGGER.log(level, msg, *args)

    # --- output to the device --------------------------------------------------------------------

    async def send(self, message: Message) -> None:
        """Send one JSON message (dropped silently once the link is closed)."""
        if not self.link.closed:
            await self.link.send_text(message.to_json())

    async def send_stt(self, text: str) -> None:
        """Show what the user said."""
        await self.send(Stt(text=text))

    async def send_emotion(self, emotion: str, text: str | None = None) -> None:
        """Set the face on the device's screen."""
        await self.send(Llm(emotion=emotion, text=text))

    async def send_mcp(self, payload: JsonObject) -> None:
        """Send a JSON-RPC message to the device's MCP server."""
        await self.send(Mcp(payload=payload))

    async def send_alert(self, status: str, message: str, emotion: str = "neutral") -> None:
        """Show a notice on the device."""
        await self.send(Alert(status=status, message=message, emotion=emotion))

    async def start_speaking(self) -> None:
        """Send `tts start` (once); send it early, the device drops audio that races it."""
        if self.state is SessionState.SPEAKING:
            return
        await self.send(Tts(state=TtsState.START))
        self.state = SessionState.SPEAKING
        self._speaking_since = self._loop.time()

    async def stop_speaking(self) -> None:
        """Send `tts stop` if speaking; the device returns to listening or idle by its mode."""
        if self.state is not SessionState.SPEAKING:
            return
        self.state = (
            SessionState.IDLE
            if self.listen_mode in (None, ListenMode.MANUAL)
            else SessionState.LISTENING
        )
        self._last_activity = self._loop.time()
        await self.send(Tts(state=TtsState.STOP))

    async def play(
        self, chunks: AsyncIterable[ReplyChunk], timings: TurnTimings | None = None
    ) -> bool:
        """Speak a reply; return False if an abort (or a newer reply) interrupted it.

        `timings`, if given, gets the moment the first frame went out.
        """
        self.stop_playback()
        task = self._loop.create_task(
            self._play(chunks, timings or TurnTimings()),
            name=f"xiaozhi playback {self.device.device_id}",
        )
        self._playback = task
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task.cancelled() and current is not None and not current.cancelling():
                return False
            raise
        finally:
            if self._playback is task:
                self._playback = None
        return True

    def stop_playback(self) -> None:
        """Stop sending reply audio at once."""
        if self._playback is not None:
            self._playback.cancel()
            self._playback = None

    async def abort_playback(self) -> None:
        """Stop reply audio and send `tts stop`, so the device never stays speaking."""
        self.stop_playback()
        await self.stop_speaking()

    async def _play(self, chunks: AsyncIterable[ReplyChunk], timings: TurnTimings) -> None:
        if self._encoder is None:
            self._encoder = OpusEncoder(
                self.reply_audio.sample_rate, self.reply_audio.frame_duration
            )
        encoder = self._encoder
        framer = PcmFramer(encoder.frame_bytes)
        try:
            await self.start_speaking()
            # The reply is fetched and encoded at once; only its first frame waits for the
            # device to have switched to speaking.
            clock = PlaybackClock(
                self.reply_audio.frame_duration / 1000,
                PLAYBACK_LEAD_FRAMES,
                self._loop.time,
                not_before=self._speaking_since + TTS_START_SETTLE_S,
            )
            async for chunk in chunks:
                if isinstance(chunk, str):
                    await self.send(Tts(state=TtsState.SENTENCE_START, text=chunk))
                    continue
                for frame in framer.push(chunk):
                    await self._send_frame(self._encode(encoder, frame, timings), clock, timings)
            if (last := framer.flush()) is not None:
                await self._send_frame(self._encode(encoder, last, timings), clock, timings)
            await clock.drain()
        finally:
            if not self.link.closed:
                await self.stop_speaking()

    def _encode(self, encoder: OpusEncoder, pcm: bytes, timings: TurnTimings) -> bytes:
        started = time.perf_counter()
        packet = encoder.encode(pcm)
        self.codec_stats.encode_s += time.perf_counter() - started
        self.codec_stats.frames_encoded += 1
        timings.mark(Stage.FIRST_ENCODED, self._loop.time())
        return packet

    async def _send_frame(self, packet: bytes, clock: PlaybackClock, timings: TurnTimings) -> None:
        await clock.wait_for_room()
        if self.link.closed:
            raise asyncio.CancelledError
        clock.frame_sent()
        await self.link.send_audio(packet, 0)
        timings.mark(Stage.FIRST_FRAME, self._loop.time())
