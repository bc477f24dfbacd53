"""One conversation channel with a device, whatever carries it.

A `DeviceSession` does the hello handshake, tracks the listen state machine, decodes microphone
audio for its handler, sends stt/llm/tts/mcp messages and plays replies paced at real time. It talks
through a `DeviceLink` and reports to the `SessionHandler` its gate resolved at connect.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
import logging
from typing import TYPE_CHECKING, Any, Protocol
import uuid

from . import microphones
from .codec import OpusEncoder, packet_samples
from .const import (
    AUDIO_RATE_MARGIN,
    DEVICE_SAMPLE_RATE,
    ENCODE_AHEAD_FRAMES,
    HELLO_TIMEOUT_S,
    IDLE_TIMEOUT_S,
    MAX_AUDIO_BURST_S,
    MAX_PLAYBACK_LEAD_FRAMES,
    MAX_SCORING_BACKLOG,
    MAX_TEXT_MESSAGE_BURST,
    MAX_TEXT_MESSAGES_PER_S,
    PACING_EARLY_S,
    PLAYBACK_LEAD_FRAMES,
    SAMPLE_WIDTH,
    TTS_START_SETTLE_S,
    TTS_STOP_GRACE_S,
    CloseCode,
)
from .errors import CodecError, FloodError, ProtocolError
from .messages import (
    REPLY_AUDIO,
    Abort,
    AudioParams,
    ClientHello,
    DeviceMessage,
    Goodbye,
    Listen,
    ListenMode,
    ListenState,
    Message,
    ServerHello,
    Tts,
    TtsState,
    parse_device_message,
)
from .offload import Offload
from .reply import Reply
from .timings import CodecStats, Stage, TurnTimings

if TYPE_CHECKING:
    from .host import SessionHandler
    from .vad import ScoredWindow

_LOGGER = logging.getLogger(__name__)


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


type SessionEvent = SessionStarted | SessionEnded | DeviceMessage
"""What a session reports to its handler, besides microphone audio (never hello or goodbye)."""


class SessionState(StrEnum):
    """Where the conversation is, as the server sees the device."""

    CONNECTING = "connecting"  # waiting for the client hello
    IDLE = "idle"
    LISTENING = "listening"
    SPEAKING = "speaking"
    CLOSED = "closed"


def after_listen(
    message: Listen, mode: ListenMode | None, state: SessionState
) -> tuple[ListenMode | None, SessionState]:
    """The listen mode and state a `listen` message leaves a channel in."""
    if message.state is ListenState.START:
        return message.mode or ListenMode.AUTO, SessionState.LISTENING
    if message.state is ListenState.STOP:
        return mode, SessionState.IDLE
    return mode, state


def after_reply(mode: ListenMode | None) -> SessionState:
    """Where a channel is once a reply ends: listening again, unless it is push-to-talk."""
    return SessionState.IDLE if mode in (None, ListenMode.MANUAL) else SessionState.LISTENING


class PlaybackClock:
    """Keeps reply audio `lead` frames ahead of what the device has played, growing to `most`.

    Each frame may go `early_s` sooner than real time asks, counted from the one before, until
    the device holds `most` frames: a sender woken a few milliseconds late then still leaves no
    gap longer than a frame and a few milliseconds, where a clock fixed to the device's
    playback would turn every late wake-up into one long gap and one short.
    """

    def __init__(
        self,
        frame_seconds: float,
        lead_frames: int,
        time: Callable[[], float],
        not_before: float = 0.0,
        *,
        most_frames: int | None = None,
        early_s: float = 0.0,
    ) -> None:
        """Follow the device's playback on the `time` clock; send nothing before `not_before`."""
        self.frame_seconds = frame_seconds
        self.sent_s = 0.0  # audio handed to the device so far
        self._lead = lead_frames * frame_seconds
        self._most = (most_frames if most_frames is not None else lead_frames) * frame_seconds
        self._early = early_s
        self._time = time
        self._not_before = not_before
        self._played_until = 0.0
        self._last_sent = float("-inf")

    def delay(self) -> float:
        """Seconds to wait before one more frame may be sent."""
        now = self._time()
        if now < self._not_before:
            return self._not_before - now
        send_at = max(
            min(
                self._played_until - self._lead, self._last_sent + self.frame_seconds - self._early
            ),
            self._played_until - self._most,
        )
        return max(send_at - now, 0.0)

    def frame_sent(self) -> None:
        """Account for one frame handed to the device."""
        now = self._time()
        self._played_until = max(self._played_until, now) + self.frame_seconds
        self._last_sent = now
        self.sent_s += self.frame_seconds

    def remaining(self) -> float:
        """Seconds until the device has played everything sent."""
        return max(self._played_until - self._time(), 0.0)


class _EncodedFrames:
    """A reply's frames, encoded off the loop up to `ENCODE_AHEAD_FRAMES` ahead of their time.

    The pacing then waits only for the clock: a frame's encoding, queued behind every other
    device's codec work, is done long before it is due.
    """

    def __init__(
        self, encoder: OpusEncoder, offload: Offload, stats: CodecStats, reply: Reply
    ) -> None:
        """Encode `reply`'s audio with the session's encoder."""
        self._encoder = encoder
        self._offload = offload
        self._stats = stats
        self._reply = reply
        self._ready: deque[bytes] = deque()
        self._in_flight = 0
        self._error: BaseException | None = None
        self.first_encoded_at = 0.0

    @property
    def pending(self) -> bool:
        """Whether frames are encoded or being encoded and not sent yet."""
        return bool(self._ready) or self._in_flight > 0

    def fill(self) -> None:
        """Hand the reply's next frames to the codec, while fewer than the lead are ahead."""
        reply, size = self._reply, self._encoder.frame_bytes
        while len(self._ready) + self._in_flight < ENCODE_AHEAD_FRAMES and (
            len(reply.pcm) >= size or (reply.audio_ended and reply.pcm)
        ):
            pcm = reply.take_pcm(size).ljust(size, b"\0")
            self._in_flight += 1
            self._offload.submit(self._encoder.encode, pcm, self._encoded, urgent=True)

    def next(self) -> bytes | None:
        """The next frame to send, if it is encoded; raises what the codec raised."""
        if self._error is not None:
            raise self._error
        return self._ready[0] if self._ready else None

    def taken(self) -> None:
        """The frame from `next` was sent."""
        self._ready.popleft()

    def _encoded(self, result: Any, seconds: float) -> None:
        self._in_flight -= 1
        if isinstance(result, BaseException):
            self._error = result
            self._reply.wake()
            return
        self._stats.encode_s += seconds
        self._stats.frames_encoded += 1
        if not self.first_encoded_at:
            self.first_encoded_at = asyncio.get_running_loop().time()
        self._ready.append(bytes(result))
        if len(self._ready) == 1:  # the sender may be waiting for it; later ones wait their turn
            self._reply.wake()


class RateLimit:
    """A token bucket: `rate` events per second on average, bursts of up to `burst`."""

    def __init__(self, rate: float, burst: float, time: Callable[[], float]) -> None:
        """Start with a full bucket."""
        self.rate = rate
        self.burst = burst
        self._time = time
        self._tokens = float(burst)
        self._updated = time()

    def allow(self, cost: float = 1.0) -> bool:
        """Take `cost` tokens; False if the bucket holds fewer."""
        now = self._time()
        if self._tokens < self.burst:  # refilled up to the burst; an excused excess is kept
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        if self._tokens < cost:
            return False
        self._tokens -= cost
        return True

    def excuse(self, seconds: float) -> None:
        """What arrived while the owner did not read, for `seconds`, is allowed on top.

        Only that much is added: a short wait (any message after audio) refills nothing more.
        """
        self._tokens += seconds * self.rate


class DeviceSession:
    """The server side of one device channel."""

    def __init__(
        self,
        link: DeviceLink,
        device: DeviceIdentity,
        handler: SessionHandler,
        *,
        reply_audio: AudioParams = REPLY_AUDIO,
        microphone_offload: Offload | None = None,
    ) -> None:
        """Bind a session to its transport and handler; call `start()` once connected.

        `microphone_offload`: where the microphone is decoded and scored (`score_audio`), if
        not on this process's codec thread.
        """
        self.link = link
        self.device = device
        self.handler = handler
        self.reply_audio = reply_audio
        self.session_id = str(uuid.uuid4())
        self.state = SessionState.CONNECTING
        self.listen_mode: ListenMode | None = None
        self.hello: ClientHello | None = None
        self._loop = asyncio.get_running_loop()
        self._offload = Offload.of(self._loop)
        self.microphone = microphones.new_microphone()
        self._microphone_offload = self._offload  # where the microphone decodes (and scores)
        self._decoding = 0  # frames handed to the offload and not back yet
        self._scoring = False  # whether the microphone's windows are scored beside the decoding
        if microphone_offload is not None:
            self.score_audio(microphone_offload)
        self._decoded_all = asyncio.Event()
        self._encoder: OpusEncoder | None = None
        self.codec_stats = CodecStats()
        self._last_activity = self._loop.time()
        self._speaking_since = 0.0
        self._reply: Reply | None = None
        self._sender = asyncio.Lock()  # one reply's sender at a time, each from start to stop
        self._watchdog: asyncio.Task[None] | None = None
        self._warned: set[str] = set()
        self._ended = asyncio.Event()
        self._text_limit = RateLimit(
            MAX_TEXT_MESSAGES_PER_S, MAX_TEXT_MESSAGE_BURST, self._loop.time
        )
        # Set at the hello, from the frame length it announces.
        self._frame_limit = RateLimit(0.0, 0.0, self._loop.time)
        self._audio_time_limit = RateLimit(AUDIO_RATE_MARGIN, MAX_AUDIO_BURST_S, self._loop.time)

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

    @property
    def closed(self) -> bool:
        """Whether the link is closed (messages sent now are dropped)."""
        return self.link.closed

    async def close(self, code: CloseCode = CloseCode.NORMAL, reason: str = "") -> None:
        """Stop the reply and close the link."""
        self.interrupt()
        if not self.link.closed:
            await self.link.close(code, reason)
        self.finish()

    def finish(self) -> None:
        """Release everything once the link is gone; tell the handler (once)."""
        if self.state is SessionState.CLOSED:
            return
        was_ready = self.ready
        self.state = SessionState.CLOSED
        self.interrupt()
        if self.hello is not None:  # after its last frames, where they were decoded
            self._microphone_offload.submit(microphones.end, self.microphone, _ignore)
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
        if self._decoding:  # the audio before it first (a `listen stop` ends what it follows)
            waited_from = self._loop.time()
            await self._decoded_all.wait()
            # The device's audio queued up unread meanwhile: not a flood of its own making.
            waited = self._loop.time() - waited_from
            self._frame_limit.excuse(waited)
            self._audio_time_limit.excuse(waited)
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
            case Goodbye():
                await self.close(CloseCode.NORMAL, "goodbye")
            case Abort():
                self.interrupt()
                self.handler.session_event(self, message)
            case _:  # every other message is the handler's, as it is
                self.handler.session_event(self, message)

    def handle_audio(self, packet: bytes) -> None:
        """Decode one Opus packet from the microphone (off the loop); the handler gets the PCM.

        Frames reach the handler in order, and before any later message (`handle_text` waits).
        """
        if self.hello is None:
            raise ProtocolError("audio before hello")
        if self.state is SessionState.CLOSED:  # its microphone is ended: nothing more decodes
            return
        self._last_activity = self._loop.time()
        if not self._frame_limit.allow():
            raise FloodError(f"more than {self._frame_limit.rate:.0f} audio frames/s")
        try:
            samples = packet_samples(packet)
        except CodecError as err:
            self._warn_once("codec", "%s: dropping undecodable audio: %s", self, err)
            return
        if not self._audio_time_limit.allow(samples / DEVICE_SAMPLE_RATE):
            raise FloodError("audio faster than real time")
        if not samples:
            return
        self._decoding += 1
        self._decoded_all.clear()
        offload = self._microphone_offload
        score = self._scoring and offload.backlog < MAX_SCORING_BACKLOG
        offload.submit(microphones.decode, (self.microphone, packet, score), self._decoded)

    def score_audio(self, offload: Offload | None = None) -> None:
        """Score the microphone's windows for voice beside the decoding, off the loop.

        The handler gets the scores with the audio and runs no model. `offload`, if given,
        decodes and scores this microphone from now on (a worker process); call this before the
        first audio.
        """
        self._scoring = True
        if offload is not None:
            self._microphone_offload = offload

    def _microphone_may_pause(self) -> None:
        """Idle, the device streams nothing: the scorer gives its model back until it does.

        In order after the audio before (where the microphone is decoded).
        """
        if self._scoring and self.state is SessionState.IDLE:
            self._microphone_offload.submit(microphones.pause, self.microphone, _ignore)

    def _decoded(
        self, result: tuple[bytes, list[ScoredWindow] | None] | Exception, seconds: float
    ) -> None:
        """Hand one decoded frame to the handler (on the loop, in order)."""
        self._decoding -= 1
        if not self._decoding:
            self._decoded_all.set()
        if isinstance(result, Exception):
            self._warn_once("codec", "%s: dropping undecodable audio: %s", self, result)
            return
        self.codec_stats.decode_s += seconds
        self.codec_stats.frames_decoded += 1
        pcm, scored = result
        if pcm and self.state is not SessionState.CLOSED:
            self.handler.audio_received(self, pcm, scored)

    async def _handle_hello(self, hello: ClientHello) -> None:
        hello.audio_params.check_decodable()
        self.hello = hello
        # Packets per second follow the announced frame length; audio time is limited apart.
        frames_per_s = 1000 / hello.audio_params.frame_duration
        self._frame_limit = RateLimit(
            AUDIO_RATE_MARGIN * frames_per_s, MAX_AUDIO_BURST_S * frames_per_s, self._loop.time
        )
        await self.send(ServerHello(session_id=self.session_id, audio_params=self.reply_audio))
        self.state = SessionState.IDLE
        _LOGGER.debug("%s: hello done (protocol v%s)", self, self.device.protocol_version)
        self.handler.session_event(self, SessionStarted())

    def _handle_listen(self, message: Listen) -> None:
        self.listen_mode, self.state = after_listen(message, self.listen_mode, self.state)
        self._microphone_may_pause()
        self.handler.session_event(self, message)

    def _warn_once(self, key: str, msg: str, *args: object) -> None:
        level = logging.DEBUG if key in self._warned else logging.WARNING
        self._warned.add(key)
        _LOGGER.log(level, msg, *args)

    # --- output to the device --------------------------------------------------------------------

    async def send(self, message: Message) -> None:
        """Send one JSON message with the session id (dropped once the link is closed)."""
        if not self.link.closed:
            try:
                await self.link.send_text(message.to_json(session_id=self.session_id))
            except ConnectionError as err:  # the device dropped the connection meanwhile
                _LOGGER.debug("%s: %s not sent: %s", self, message.TYPE, err)

    async def _send_audio(self, packet: bytes) -> bool:
        """Send one reply frame; False if the device dropped the connection meanwhile."""
        try:
            await self.link.send_audio(packet, 0)
        except ConnectionError as err:
            _LOGGER.debug("%s: reply audio not sent: %s", self, err)
            return False
        return True

    async def start_speaking(self) -> None:
        """Send `tts start` (once); send it early, the device drops audio that races it."""
        if self.state is SessionState.SPEAKING:
            return
        await self.send(Tts(state=TtsState.START))
        self.state = SessionState.SPEAKING
        self._speaking_since = self._loop.time()
        if self._scoring:  # after the audio before: the utterance it ends is scored whole
            self._microphone_offload.submit(microphones.speech_over, self.microphone, _ignore)

    async def stop_speaking(self) -> None:
        """Send `tts stop` if speaking; the device returns to listening or idle by its mode."""
        if self.state is not SessionState.SPEAKING:
            return
        self.state = after_reply(self.listen_mode)
        self._last_activity = self._loop.time()
        self._microphone_may_pause()
        await self.send(Tts(state=TtsState.STOP))

    @property
    def speaking(self) -> bool:
        """Whether a reply is being sent."""
        return self._reply is not None

    def interrupt(self) -> None:
        """Stop the reply being sent at once; its sender sends `tts stop`."""
        if self._reply is not None:
            self._reply.interrupt()

    async def speak(self, reply: Reply, timings: TurnTimings | None = None) -> bool:
        """Send one turn's output until it is done; return False if it was interrupted.

        The turn's only sender: messages in order, `tts start` when asked, the reply audio paced
        at real time with each sentence's text just before its first frame, then, once the
        device has played it all and `TTS_STOP_GRACE_S` more, `tts stop`: the one place a reply
        ends. A newer reply interrupts this one and starts once this one's `tts stop` is sent:
        overlapping it, the newer one would find the device speaking and send no `tts start`,
        and this one's `tts stop` would then switch the device to listening under its audio.
        """
        if self._reply is not None:
            self._reply.interrupt()
        self._reply = reply
        async with self._sender:
            try:
                finished = await self._send_reply(reply, timings or TurnTimings())
            finally:
                if self._reply is reply:
                    self._reply = None
            await self.stop_speaking()
        return finished

    async def _send_reply(self, reply: Reply, timings: TurnTimings) -> bool:
        if self._encoder is None:
            self._encoder = OpusEncoder(
                self.reply_audio.sample_rate, self.reply_audio.frame_duration
            )
        frames = _EncodedFrames(self._encoder, self._offload, self.codec_stats, reply)
        bytes_per_s = self.reply_audio.sample_rate * SAMPLE_WIDTH
        frame_s = self.reply_audio.frame_duration / 1000
        clock: PlaybackClock | None = None
        while not reply.interrupted and not self.link.closed:
            if reply.speak_requested and clock is None:
                # First, ahead of messages queued meanwhile: the device switches while they go.
                await self.start_speaking()
                timings.mark(Stage.TTS_START, self._speaking_since)
                # The reply is fetched and encoded at once; only its first frame waits for the
                # device to have switched to speaking.
                clock = PlaybackClock(
                    frame_s,
                    PLAYBACK_LEAD_FRAMES,
                    self._loop.time,
                    not_before=self._speaking_since + TTS_START_SETTLE_S,
                    most_frames=MAX_PLAYBACK_LEAD_FRAMES,
                    early_s=PACING_EARLY_S,
                )
            while reply.messages:
                await self.send(reply.messages.popleft())
            reply.read_audio(bytes_per_s)
            if clock is not None:
                frames.fill()
            if clock is not None and (packet := frames.next()) is not None:
                timings.mark(Stage.FIRST_ENCODED, frames.first_encoded_at)
                if (delay := clock.delay()) > 0:
                    await reply.wait(delay)
                    continue
                for text in reply.subtitles.due(clock.sent_s):
                    await self.send(Tts(state=TtsState.SENTENCE_START, text=text))
                clock.frame_sent()
                frames.taken()
                if not await self._send_audio(packet):
                    reply.interrupt()  # the device is gone
                    break
                timings.mark(Stage.FIRST_FRAME, self._loop.time())
                continue
            if reply.done and not frames.pending:
                break
            await reply.wait()
        if reply.audio_error is not None:
            _LOGGER.warning("%s: reply audio failed: %s", self, reply.audio_error)
        for text in reply.subtitles.rest():
            await self.send(Tts(state=TtsState.SENTENCE_START, text=text))
        # Let the device play what it holds; clients that clear their buffer on `tts stop`
        # would cut the tail without the grace.
        if clock is not None:
            stop_at = self._loop.time() + clock.remaining() + TTS_STOP_GRACE_S
            while not reply.interrupted and (remaining := stop_at - self._loop.time()) > 0:
                await reply.wait(remaining)
        return not reply.interrupted and not self.link.closed


def _ignore(result: object, seconds: float) -> None:
    """The result of a call done for its effect (an error is the loop's to log: none expected)."""
