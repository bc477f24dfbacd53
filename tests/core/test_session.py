"""Tests for the device session: handshake, listen states, playback pacing and abort."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
import itertools
import json
import random
import threading
import time
from typing import ClassVar, Self
from unittest.mock import patch

import pytest

from custom_components.xiaozhi.core import (
    SessionEnded,
    SessionEvent,
    SessionStarted,
    SessionState,
    microphones,
    vad,
)
from custom_components.xiaozhi.core.codec import OpusDecoder, OpusEncoder
from custom_components.xiaozhi.core.const import (
    MAX_PLAYBACK_LEAD_FRAMES,
    MAX_SCORING_BACKLOG,
    PACING_EARLY_S,
    PLAYBACK_LEAD_FRAMES,
    TTS_START_SETTLE_S,
    TTS_STOP_GRACE_S,
    CloseCode,
)
from custom_components.xiaozhi.core.errors import FloodError, ProtocolError, UnsupportedAudioError
from custom_components.xiaozhi.core.messages import (
    DEVICE_MESSAGE_TYPES,
    Abort,
    ClientHello,
    JsonObject,
    Listen,
    ListenMode,
    ListenState,
    Message,
)
from custom_components.xiaozhi.core.offload import Offload
from custom_components.xiaozhi.core.reply import Reply
from custom_components.xiaozhi.core.session import (
    DeviceIdentity,
    DeviceSession,
    PlaybackClock,
    RateLimit,
)
from tests.audio import tone

HELLO = ClientHello(features={"mcp": True}).to_json()  # what the firmware sends
FRAME_S = 0.06


class RecordingLink:
    """A DeviceLink that records what the session sends, with times."""

    def __init__(self) -> None:
        self.sent: list[tuple[float, str, object]] = []
        self.closed = False
        self.close_code: CloseCode | None = None

    async def send_text(self, text: str) -> None:
        self.sent.append((asyncio.get_running_loop().time(), "text", json.loads(text)))

    async def send_audio(self, packet: bytes, timestamp: int) -> None:
        self.sent.append((asyncio.get_running_loop().time(), "audio", packet))

    async def close(self, code: CloseCode, reason: str) -> None:
        self.closed, self.close_code = True, code

    def texts(self) -> list[dict[str, object]]:
        return [m for _, kind, m in self.sent if kind == "text"]  # type: ignore[misc]

    def audio_times(self) -> list[float]:
        return [t for t, kind, _ in self.sent if kind == "audio"]


class RecordingHost:
    def __init__(self) -> None:
        self.events: list[object] = []
        self.scored: list[Sequence[tuple[float, float]] | None] = []

    def session_event(self, session: DeviceSession, event: SessionEvent) -> None:
        match event:
            case SessionStarted():
                self.events.append("started")
            case SessionEnded():
                self.events.append("ended")
            case _:
                self.events.append(event)

    def audio_received(
        self, session: DeviceSession, pcm: bytes, scored: Sequence[tuple[float, float]] | None
    ) -> None:
        self.events.append(len(pcm))
        self.scored.append(scored)


@pytest.fixture
async def session() -> AsyncIterator[tuple[DeviceSession, RecordingLink, RecordingHost]]:
    link, host = RecordingLink(), RecordingHost()
    session = DeviceSession(link, DeviceIdentity("aa:bb:cc:dd:ee:ff"), host)
    session.start()
    await session.handle_text(HELLO)
    yield session, link, host
    await session.close()


def reply(seconds: float, sentence: str = "好的。") -> Reply:
    async def audio() -> AsyncIterator[bytes]:
        pcm = tone(seconds, 24000)
        for i in range(0, len(pcm), 4000):  # odd-sized chunks, as a TTS stream gives them
            yield pcm[i : i + 4000]

    return Reply.of(audio(), [sentence])


async def test_hello_answered_with_session_id(
    session: tuple[DeviceSession, RecordingLink, RecordingHost],
) -> None:
    s, link, host = session
    hello = link.texts()[0]
    assert hello["type"] == "hello" and hello["transport"] == "websocket"
    assert hello["session_id"] == s.session_id
    assert s.state is SessionState.IDLE
    assert host.events == ["started"]


async def test_message_before_hello_is_a_protocol_error() -> None:
    s = DeviceSession(RecordingLink(), DeviceIdentity("aa:bb:cc:dd:ee:ff"), RecordingHost())
    with pytest.raises(ProtocolError):
        await s.handle_text('{"type": "listen", "state": "start"}')
    with pytest.raises(ProtocolError):
        s.handle_audio(b"\x00")
    with pytest.raises(UnsupportedAudioError):
        await s.handle_text(HELLO.replace("16000", "44100"))


async def test_listen_state_machine(
    session: tuple[DeviceSession, RecordingLink, RecordingHost],
) -> None:
    s, _, host = session
    await s.handle_text('{"type": "listen", "state": "detect", "text": "你好小智"}')
    assert s.state is SessionState.IDLE
    await s.handle_text('{"type": "listen", "state": "start", "mode": "manual"}')
    assert (s.state, s.listen_mode) == (SessionState.LISTENING, ListenMode.MANUAL)
    await s.handle_text('{"type": "listen", "state": "stop"}')
    assert s.state is SessionState.IDLE
    await s.start_speaking()
    await s.stop_speaking()
    assert s.state is SessionState.IDLE  # manual mode returns to idle
    await s.handle_text('{"type": "listen", "state": "start", "mode": "auto"}')
    await s.start_speaking()
    await s.stop_speaking()
    assert s.state is SessionState.LISTENING  # auto mode returns to listening
    assert [e.state for e in host.events if isinstance(e, Listen)] == [
        "detect",
        "start",
        "stop",
        "start",
    ]


async def test_playback_is_paced_at_real_time(
    session: tuple[DeviceSession, RecordingLink, RecordingHost],
) -> None:
    s, link, _ = session
    assert await s.speak(reply(1.5)) is True
    texts = link.texts()
    assert [t.get("state") for t in texts[1:]] == ["start", "sentence_start", "stop"]
    assert texts[2]["text"] == "好的。"
    times = link.audio_times()
    assert len(times) == 25
    # The first frames go out at once (pre-buffer), then one per 60 ms, never faster.
    start = link.sent[1][0]
    assert times[0] - start >= TTS_START_SETTLE_S - 0.005
    burst = times[PLAYBACK_LEAD_FRAMES] - times[0]
    assert burst < 0.03
    steady = [
        b - a
        for a, b in zip(
            times[PLAYBACK_LEAD_FRAMES + 1 :], times[PLAYBACK_LEAD_FRAMES + 2 :], strict=False
        )
    ]
    assert min(steady) > FRAME_S - 0.015
    assert sum(steady) / len(steady) == pytest.approx(FRAME_S, abs=0.005)
    # `tts stop` waits until the device has played what it holds, and a grace more.
    stop_time = link.sent[-1][0]
    assert stop_time - times[-1] >= PLAYBACK_LEAD_FRAMES * FRAME_S + TTS_STOP_GRACE_S - 0.03


def _paced_gaps(early_s: float, frames: int, lateness_s: list[float]) -> list[float]:
    """Send `frames` on a simulated clock, each wake-up late by the next of `lateness_s`."""
    now = [0.0]
    clock = PlaybackClock(
        FRAME_S,
        PLAYBACK_LEAD_FRAMES,
        lambda: now[0],
        most_frames=MAX_PLAYBACK_LEAD_FRAMES,
        early_s=early_s,
    )
    sent: list[float] = []
    most_ahead = 0.0
    for frame in range(frames):
        now[0] += clock.delay() + (lateness_s[frame] if frame > PLAYBACK_LEAD_FRAMES else 0.0)
        clock.frame_sent()
        sent.append(now[0])
        most_ahead = max(most_ahead, clock.remaining())
    assert most_ahead <= (MAX_PLAYBACK_LEAD_FRAMES + 1) * FRAME_S + 1e-9
    return [b - a for a, b in itertools.pairwise(sent[PLAYBACK_LEAD_FRAMES:])]


def test_a_late_sender_leaves_no_long_gap() -> None:
    """Wake-ups up to 7 ms late never part two frames by more than 65 ms, as they would on a
    clock fixed to the device's playback; the device is never starved nor flooded."""
    rng = random.Random(7)
    frames = 1000  # a minute of speech: the lead reaches its most and stays there
    lateness = [rng.choice([0.0, 0.0, 0.0, 0.001, 0.007]) for _ in range(frames)]
    fixed = _paced_gaps(0.0, frames, lateness)
    assert max(fixed) > 0.066  # the old clock: one long gap after each late wake-up
    gaps = _paced_gaps(PACING_EARLY_S, frames, lateness)
    early = gaps[: len(gaps) // 10]  # before the lead reaches its most
    assert max(early) <= FRAME_S - PACING_EARLY_S + 0.007 + 1e-9
    assert min(gaps) >= FRAME_S - PACING_EARLY_S - 1e-9  # never a burst
    # Over a long reply the average is real time: the lead stops growing at its most.
    assert sum(gaps) / len(gaps) == pytest.approx(FRAME_S, abs=0.001)


async def test_slow_encodes_do_not_hold_up_the_pacing(
    session: tuple[DeviceSession, RecordingLink, RecordingHost],
) -> None:
    """Frames are encoded ahead, so one encode taking longer than a frame leaves no gap."""
    s, link, _ = session
    calls = itertools.count()
    encode = OpusEncoder.encode

    def slow_now_and_then(self: OpusEncoder, pcm: bytes) -> bytes:
        if next(calls) % 6 == 5:
            threading.Event().wait(0.15)  # on the codec's thread, like a starved core
        return encode(self, pcm)

    with patch.object(OpusEncoder, "encode", slow_now_and_then):
        assert await s.speak(reply(2.4)) is True
    times = link.audio_times()
    assert len(times) == 40
    gaps = [b - a for a, b in itertools.pairwise(times[PLAYBACK_LEAD_FRAMES + 4 :])]
    assert max(gaps) < 0.1


async def test_abort_stops_audio_at_once(
    session: tuple[DeviceSession, RecordingLink, RecordingHost],
) -> None:
    s, link, host = session
    await s.handle_text('{"type": "listen", "state": "start", "mode": "auto"}')
    playing = asyncio.create_task(s.speak(reply(5.0)))
    await asyncio.sleep(0.5)
    await s.handle_text('{"type": "abort"}')
    aborted_at = asyncio.get_running_loop().time()
    assert await playing is False
    after = [t for t in link.audio_times() if t > aborted_at]
    assert after == []
    assert link.texts()[-1] == {"type": "tts", "state": "stop", "session_id": s.session_id}
    assert [t.get("state") for t in link.texts()].count("stop") == 1
    assert isinstance(host.events[-1], Abort)
    # The next reply plays in full.
    count = len(link.audio_times())
    assert await s.speak(reply(0.6)) is True
    assert len(link.audio_times()) - count == 10


async def test_a_newer_reply_starts_after_the_older_ones_tts_stop(
    session: tuple[DeviceSession, RecordingLink, RecordingHost],
) -> None:
    """A reply started while another plays (typed text, an announcement) takes over with its
    own `tts start`, after the older one's `tts stop`, and none of its audio precedes it."""
    s, link, _ = session
    older = asyncio.create_task(s.speak(reply(3.0, "第一句。")))
    await asyncio.sleep(0.3)
    newer = reply(0.6, "第二句。")
    newer.start_speaking()  # ready to speak at once, as a typed question's reply is
    assert await s.speak(newer) is True
    assert await older is False
    states = [(t.get("state"), t.get("text")) for t in link.texts()[1:]]
    assert states == [
        ("start", None),
        ("sentence_start", "第一句。"),
        ("stop", None),
        ("start", None),
        ("sentence_start", "第二句。"),
        ("stop", None),
    ]
    text_at = [i for i, (_, kind, _) in enumerate(link.sent) if kind == "text"]
    stopped, restarted = text_at[3], text_at[4]  # the older one's `tts stop`, the newer's start
    assert [kind for _, kind, _ in link.sent[stopped:restarted]] == ["text"]
    assert [kind for _, kind, _ in link.sent[restarted:]].count("audio") == 10  # all of it
    assert s.state is SessionState.IDLE


async def test_hello_timeout_closes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("custom_components.xiaozhi.core.session.HELLO_TIMEOUT_S", 0.05)
    link = RecordingLink()
    s = DeviceSession(link, DeviceIdentity("aa:bb:cc:dd:ee:ff"), RecordingHost())
    s.start()
    await asyncio.wait_for(s.wait_closed(), 1)
    assert link.close_code is CloseCode.HELLO_TIMEOUT


async def test_idle_timeout_closes_but_not_while_speaking(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("custom_components.xiaozhi.core.session.IDLE_TIMEOUT_S", 0.2)
    link, host = RecordingLink(), RecordingHost()
    s = DeviceSession(link, DeviceIdentity("aa:bb:cc:dd:ee:ff"), host)
    s.start()
    await s.handle_text(HELLO)
    await s.speak(reply(0.5))  # longer than the idle timeout
    assert not link.closed
    await asyncio.wait_for(s.wait_closed(), 1)
    assert link.close_code is CloseCode.IDLE_TIMEOUT
    assert host.events[-1] == "ended"


@dataclass(frozen=True, slots=True)
class Notice(Message):
    """A message type the firmware might add one day."""

    TYPE: ClassVar[str] = "notice"
    text: str

    @classmethod
    def from_dict(cls, data: JsonObject) -> Self:
        return cls(text=str(data.get("text", "")))

    def fields(self) -> JsonObject:
        return {"text": self.text}


async def test_a_new_message_type_needs_no_change_to_the_session(
    session: tuple[DeviceSession, RecordingLink, RecordingHost], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defining and registering it (messages.py) and handling it is all a new event needs."""
    s, _, host = session
    monkeypatch.setitem(DEVICE_MESSAGE_TYPES, Notice.TYPE, Notice)  # type: ignore[arg-type]
    await s.handle_text('{"type": "notice", "text": "低电量"}')
    assert host.events[-1] == Notice(text="低电量")


async def test_microphone_audio_is_decoded_off_the_loop_in_order_before_later_messages(
    session: tuple[DeviceSession, RecordingLink, RecordingHost],
) -> None:
    """Frames of 20/60 ms reach the handler in order, all before the `listen stop` after them."""
    s, _, host = session
    encoders = {ms: OpusEncoder(16000, ms, bitrate=None, complexity=0) for ms in (20, 60)}
    lengths = [20, 60, 60, 20, 60] * 6
    packets = [encoders[ms].encode(tone(ms / 1000, 16000)) for ms in lengths]
    await s.handle_text(Listen(state=ListenState.START, mode=ListenMode.MANUAL).to_json())
    main = threading.get_ident()
    decoders: set[int] = set()
    decode = OpusDecoder.decode

    def spy(decoder: OpusDecoder, packet: bytes) -> bytes:
        decoders.add(threading.get_ident())
        return decode(decoder, packet)

    with patch.object(OpusDecoder, "decode", spy):
        for packet in packets:
            s.handle_audio(packet)
        await s.handle_text(Listen(state=ListenState.STOP).to_json())
    heard = host.events[2:]
    assert heard[:-1] == [ms * 32 for ms in lengths]  # 16 kHz 16-bit: 32 bytes a millisecond
    assert isinstance(heard[-1], Listen) and heard[-1].state is ListenState.STOP
    assert decoders and main not in decoders
    assert s.codec_stats.frames_decoded == len(packets)


def test_a_rate_limit_excuses_what_queued_while_its_owner_did_not_read() -> None:
    now = [0.0]
    strict, excused = (RateLimit(25.0, 66.0, lambda: now[0]) for _ in range(2))
    now[0] = 6.0  # the owner read nothing for 6 s: 100 frames of real-time audio queued up
    excused.excuse(6.0)
    assert sum(strict.allow() for _ in range(100)) < 100  # taken for a flood
    assert sum(excused.allow() for _ in range(100)) == 100
    assert sum(excused.allow() for _ in range(200)) < 200  # spent: the limit holds again
    excused.excuse(0.001)  # a message after audio waited a moment: no refill of a flood's bucket
    assert not excused.allow()


async def test_audio_queued_while_a_message_waited_for_decoding_is_no_flood(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A busy host reads nothing from a device while its message waits for the audio before
    it; the audio that queued up meanwhile then comes at once, and is not the device's flood."""
    monkeypatch.setattr("custom_components.xiaozhi.core.session.MAX_AUDIO_BURST_S", 0.3)
    link, host = RecordingLink(), RecordingHost()
    s = DeviceSession(link, DeviceIdentity("aa:bb:cc:dd:ee:05"), host)
    s.start()
    await s.handle_text(HELLO)  # bursts of 0.3 s: 5 frames of 60 ms
    try:
        packet = OpusEncoder(16000, 60, bitrate=None, complexity=0).encode(tone(0.06, 16000))
        await s.handle_text(Listen(state=ListenState.START, mode=ListenMode.REALTIME).to_json())
        busy = threading.Event()
        Offload.of(asyncio.get_running_loop()).submit(busy.wait, None, lambda *_: None)
        s.handle_audio(packet)
        waiting = asyncio.create_task(s.handle_text(Listen(state=ListenState.STOP).to_json()))
        await asyncio.sleep(1.0)  # 1 s of the device's audio queues up unread
        busy.set()
        await waiting
        for _ in range(16):
            s.handle_audio(packet)  # raises FloodError if taken for a flood

        def flood() -> None:
            for _ in range(100):
                s.handle_audio(packet)

        with pytest.raises(FloodError):  # a real flood still is one
            flood()
    finally:
        await s.close()


async def test_a_session_asked_to_score_its_audio_scores_it_off_the_loop(
    session: tuple[DeviceSession, RecordingLink, RecordingHost],
) -> None:
    """The add-on's sessions score the windows beside the decoding; the handler gets the scores
    of the windows each frame ends (a 60 ms frame ends one or two 32 ms windows)."""
    s, _, host = session
    encoder = OpusEncoder(16000, 60, bitrate=None, complexity=0)
    packets = [encoder.encode(tone(0.06, 16000)) for _ in range(8)]
    await s.handle_text(Listen(state=ListenState.START, mode=ListenMode.MANUAL).to_json())
    s.handle_audio(packets[0])
    await s.handle_text(Listen(state=ListenState.STOP).to_json())
    assert host.scored == [None]  # not asked: the handler scores
    s.score_audio()
    main = threading.get_ident()
    scorers: set[int] = set()
    score = vad.WindowScorer.score

    def spy(scorer: vad.WindowScorer, pcm: bytes) -> list[vad.ScoredWindow]:
        scorers.add(threading.get_ident())
        return score(scorer, pcm)

    with patch.object(vad.WindowScorer, "score", spy):
        for packet in packets[1:]:
            s.handle_audio(packet)
        await s.handle_text(Listen(state=ListenState.STOP).to_json())
    scored = host.scored[1:]
    assert [len(windows or ()) for windows in scored] == [1, 2, 2, 2, 2, 2, 2]  # 7 x 960 samples
    assert all(0.0 <= p <= 1.0 and level > 0 for windows in scored for p, level in windows or ())
    assert scorers and main not in scorers
    # Idle after `listen stop`: the scorer gives its model back (after the audio before it).
    async with asyncio.timeout(5):
        while microphones.holds_model(s.microphone):  # noqa: ASYNC110 - no event
            await asyncio.sleep(0.01)
    # Closed: its microphone's decoder and scorer are dropped where they lived.
    await s.close()
    async with asyncio.timeout(5):
        while s.microphone in microphones._microphones:  # noqa: ASYNC110 - no event
            await asyncio.sleep(0.01)


async def test_tts_start_tells_the_scorer_the_speech_is_over(
    session: tuple[DeviceSession, RecordingLink, RecordingHost],
) -> None:
    """Once `tts start` is out, the room's background is not scored (a hangover later, it
    would be): only a new voice needs the model while the reply plays."""
    s, _, _ = session
    s.score_audio()
    encoder = OpusEncoder(16000, 60, bitrate=None, complexity=0)
    room = random.Random(1)
    noise = [
        encoder.encode(
            b"".join(int(room.gauss(0, 30)).to_bytes(2, "little", signed=True) for _ in range(960))
        )
        for _ in range(6)
    ]
    await s.handle_text(Listen(state=ListenState.START, mode=ListenMode.REALTIME).to_json())

    async def skipped_after(packets: list[bytes]) -> int:
        for packet in packets:
            s.handle_audio(packet)
        await s.handle_text(Listen(state=ListenState.DETECT, text="hi").to_json())  # in order
        scorer = microphones._microphones[s.microphone].scorer
        assert scorer is not None
        return scorer.model_skipped

    assert await skipped_after(noise[:3]) == 0  # within the hangover: every window scored
    await s.start_speaking()
    assert await skipped_after(noise[3:]) == 6  # every window the next three frames complete


async def test_a_busy_codec_queue_leaves_the_scoring_to_the_handler(
    session: tuple[DeviceSession, RecordingLink, RecordingHost],
) -> None:
    """The model holds the GIL: with MAX_SCORING_BACKLOG codec jobs waiting, a frame goes
    unscored (HA's endpointer scores it); once the queue drains, frames are scored again."""
    s, _, host = session
    s.score_audio()
    encoder = OpusEncoder(16000, 60, bitrate=None, complexity=0)
    packets = [encoder.encode(tone(0.06, 16000)) for _ in range(3)]
    await s.handle_text(Listen(state=ListenState.START, mode=ListenMode.MANUAL).to_json())
    offload = Offload.of(asyncio.get_running_loop())
    for _ in range(MAX_SCORING_BACKLOG + 1):  # other devices' codec work (one batch runs)
        offload.submit(time.sleep, 0.0005, lambda *_: None)
    assert offload.backlog >= MAX_SCORING_BACKLOG
    s.handle_audio(packets[0])
    await s.handle_text(Listen(state=ListenState.STOP).to_json())  # waits for the decoding
    await s.handle_text(Listen(state=ListenState.START, mode=ListenMode.MANUAL).to_json())
    for packet in packets[1:]:
        s.handle_audio(packet)
    await s.handle_text(Listen(state=ListenState.STOP).to_json())
    assert host.scored[0] is None
    assert [len(windows or ()) for windows in host.scored[1:]] == [1, 2]  # a new stream
