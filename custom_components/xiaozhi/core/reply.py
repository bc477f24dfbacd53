"""One turn's output to a device, in order: what producers push, what the session's sender sends.

Producers (pipeline event callbacks, an announcement) push messages, sentences and the reply
audio into a `Reply` without waiting; `DeviceSession.speak()` is its only sender. Subtitles are
placed on the audio's timeline by `SubtitleTrack`, so each `sentence_start` goes out just before
the first frame of its sentence.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from .const import MAX_REPLY_AHEAD_S

if TYPE_CHECKING:
    from .messages import Message

CJK_WEIGHT: Final = 3  # a Chinese character takes about as long to say as three Latin letters


def speech_weight(text: str) -> int:
    """Roughly how long `text` takes to say, in units of one Latin letter."""
    weight = sum(CJK_WEIGHT if _is_cjk(char) else 1 for char in text if char.isalnum())
    return max(weight, 1)


def _is_cjk(char: str) -> bool:
    return "\u3400" <= char <= "\u9fff" or "\uf900" <= char <= "\ufaff"


@dataclass(slots=True)
class _Subtitle:
    text: str
    weight: int
    ready_at: float  # seconds of reply audio that had arrived when its text was known


class SubtitleTrack:
    """Places each sentence's text at the moment its audio starts.

    A sentence's audio cannot start before its text was known: audio that arrived earlier belongs
    to earlier sentences. That alone places the sentences of a streamed reply (each one's text
    completes while the audio of the previous ones arrives). Sentences known together (a reply
    not streamed: all text first, then all audio) share their stretch of audio in proportion to
    how long each takes to say, once the end of that stretch is known; until then the later ones
    wait, so a subtitle may come late but never early.
    """

    def __init__(self) -> None:
        """Start empty."""
        self._sentences: list[_Subtitle] = []
        self._next = 0  # the first sentence not shown yet
        self._last_start = 0.0
        self.audio_s = 0.0  # reply audio that arrived so far
        self.audio_ended = False

    def add(self, text: str, ready_at: float | None = None) -> None:
        """Add the next sentence, whose text is complete now (or was, `ready_at` s of audio in)."""
        if text := text.strip():
            at = self.audio_s if ready_at is None else ready_at
            self._sentences.append(_Subtitle(text, speech_weight(text), at))

    def added_since(self, index: int) -> list[tuple[str, float]]:
        """The sentences from the `index`th on, with when their text was complete."""
        return [(subtitle.text, subtitle.ready_at) for subtitle in self._sentences[index:]]

    def __bool__(self) -> bool:
        """Whether sentences are waiting for their audio."""
        return self._next < len(self._sentences)

    def due(self, position: float) -> list[str]:
        """Return the sentences whose audio starts at or before `position` (seconds sent)."""
        due: list[str] = []
        while self and (start := self._start(self._next)) is not None and start <= position:
            due.append(self._sentences[self._next].text)
            self._last_start = start
            self._next += 1
        return due

    def rest(self) -> list[str]:
        """Return every sentence still waiting (the audio is over)."""
        rest = [subtitle.text for subtitle in self._sentences[self._next :]]
        self._next = len(self._sentences)
        return rest

    def _start(self, index: int) -> float | None:
        """Where sentence `index` starts in the audio; None while that is not known yet."""
        ready_at = self._sentences[index].ready_at
        group = [i for i, s in enumerate(self._sentences) if s.ready_at == ready_at]
        if index == group[0]:
            return max(ready_at, self._last_start)
        later = (s.ready_at for s in self._sentences[group[-1] + 1 :])
        end = next(later, self.audio_s if self.audio_ended else None)
        if end is None:
            return None
        weights = [self._sentences[i].weight for i in group]
        before = sum(weights[: group.index(index)])
        return max(ready_at + (end - ready_at) * before / sum(weights), self._last_start)


@dataclass(slots=True)
class ReplyUpdate:
    """What was added to a reply since the last update: what a relay forwards, in this order."""

    messages: list[Message]
    speak: bool  # `tts start` was asked for
    sentences: list[tuple[str, float]]  # text, and seconds of audio that had arrived by then
    has_audio: bool
    pcm: bytes
    audio_ended: bool
    finished: bool


class Reply:
    """What a session sends for one turn, in order; pushed without waiting, sent by one sender."""

    def __init__(self) -> None:
        """Start with nothing to send."""
        self.messages: deque[Message] = deque()
        self.subtitles = SubtitleTrack()
        self.pcm = bytearray()  # reply audio that arrived and is not sent yet
        self.bytes_per_s = 1.0  # of `pcm`; set by the sender when it starts reading
        self.speak_requested = False
        self.has_audio = False
        self.audio_ended = False
        self.audio_error: Exception | None = None
        self.finished = False  # no more messages or sentences will come
        self.interrupted = False
        self._changed = asyncio.Event()
        self._room = asyncio.Event()
        self._source: AsyncIterable[bytes] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._sentences_taken = 0

    @classmethod
    def of(cls, audio: AsyncIterable[bytes], sentences: Iterable[str] = ()) -> Reply:
        """Return a complete reply: these sentences spoken by this audio."""
        reply = cls()
        for sentence in sentences:
            reply.sentence(sentence)
        reply.play(audio)
        reply.finish()
        return reply

    # --- producers -------------------------------------------------------------------------------

    def send(self, message: Message) -> None:
        """Queue a message (sent in order with everything else)."""
        self.messages.append(message)
        self._changed.set()

    def start_speaking(self) -> None:
        """Ask for `tts start` now: the device drops audio that races its switch to speaking."""
        self.speak_requested = True
        self._changed.set()

    def sentence(self, text: str, ready_at: float | None = None) -> None:
        """Add the text of the next sentence; it is shown when its audio starts.

        `ready_at` places it on a relayed reply's timeline: the seconds of audio that had
        arrived when its text was complete, where the reply was made.
        """
        self.subtitles.add(text, ready_at)
        self._changed.set()

    def play(self, audio: AsyncIterable[bytes]) -> None:
        """Speak this audio (16-bit mono PCM at the reply rate); the sender reads it ahead."""
        if self.has_audio or self.interrupted:
            return
        self.has_audio = self.speak_requested = True
        self._source = audio
        self._changed.set()

    def finish(self) -> None:
        """Nothing more will be added (audio already playing still ends on its own)."""
        self.finished = True
        self._changed.set()

    def interrupt(self) -> None:
        """Stop at once: the sender sends `tts stop` and returns."""
        self.interrupted = True
        if self._reader is not None:
            self._reader.cancel()
        self._changed.set()

    async def _read(self, audio: AsyncIterable[bytes]) -> None:
        try:
            async for pcm in audio:
                self.pcm += pcm
                self.subtitles.audio_s += len(pcm) / self.bytes_per_s
                self._changed.set()
                while len(self.pcm) > MAX_REPLY_AHEAD_S * self.bytes_per_s:
                    await self._room.wait()  # the sender makes room as it plays
                    self._room.clear()
        except Exception as err:  # a failing audio source ends the reply, whatever the cause
            self.audio_error = err
        finally:
            self.subtitles.audio_ended = self.audio_ended = True
            self._changed.set()

    # --- the sender ------------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        """Whether everything was sent."""
        return (
            self.finished
            and not self.messages
            and (not self.has_audio or (self.audio_ended and not self.pcm))
        )

    def read_audio(self, bytes_per_s: float) -> None:
        """Start reading the audio ahead of playback, if it is there and not read yet."""
        if self._source is None or self._reader is not None or self.interrupted:
            return
        self.bytes_per_s = bytes_per_s
        self._reader = asyncio.get_running_loop().create_task(
            self._read(self._source), name="xiaozhi reply audio"
        )

    def take_pcm(self, size: int) -> bytes:
        """Take up to `size` bytes of reply audio for the next frame."""
        chunk = bytes(self.pcm[:size])
        del self.pcm[:size]
        self._room.set()
        return chunk

    def take_update(self) -> ReplyUpdate:
        """Take everything added since the last update (a relay's sender, instead of playing)."""
        messages = list(self.messages)
        self.messages.clear()
        sentences = self.subtitles.added_since(self._sentences_taken)
        self._sentences_taken += len(sentences)
        pcm = self.take_pcm(len(self.pcm))
        return ReplyUpdate(
            messages=messages,
            speak=self.speak_requested,
            sentences=sentences,
            has_audio=self.has_audio,
            pcm=pcm,
            audio_ended=self.audio_ended,
            finished=self.finished,
        )

    def wake(self) -> None:
        """Wake the sender: something of its own is ready (an encoded frame)."""
        self._changed.set()

    async def wait(self, timeout: float | None = None) -> None:
        """Sleep until something is added, or `timeout` seconds pass."""
        if not self._changed.is_set():
            handle = (
                None
                if timeout is None
                else asyncio.get_running_loop().call_later(timeout, self._changed.set)
            )
            await self._changed.wait()
            if handle is not None:
                handle.cancel()
        self._changed.clear()
