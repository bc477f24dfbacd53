"""The emulated device's microphone: a real-time frame clock that streams speech, then noise."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
import contextlib
import random
from typing import Final

from custom_components.xiaozhi.core.codec import OpusEncoder
from custom_components.xiaozhi.core.const import DEVICE_SAMPLE_RATE

from .audio import frame_bytes, pcm_frames, room_noise

DEVICE_OPUS_COMPLEXITY: Final = 0  # the firmware's encoder settings (protocol.md §3.5)


def device_encoder(frame_duration_ms: int) -> OpusEncoder:
    """Return an Opus encoder set up like the firmware's (16 kHz, VBR, complexity 0)."""
    return OpusEncoder(
        DEVICE_SAMPLE_RATE, frame_duration_ms, bitrate=None, complexity=DEVICE_OPUS_COMPLEXITY
    )


class Microphone:
    """A microphone that captures one frame per frame duration until stopped.

    It captures the speech given to `say()`, and room noise (or silence) in between. Like the
    firmware's audio processor, it encodes and sends a frame only while `is_open()` says the
    device sends audio (listening, or speaking in realtime mode); other frames are lost.
    """

    def __init__(
        self,
        send: Callable[[bytes], Awaitable[None]],
        is_open: Callable[[], bool],
        *,
        frame_duration_ms: int,
        noise: float = 0.0,
        seed: int = 0,
    ) -> None:
        """Send Opus packets with `send`; `noise` is the room noise level in 16-bit units."""
        self.frame_duration_ms = frame_duration_ms
        self.noise = noise
        self.sent = 0  # frames sent to the server
        self.muted = 0  # frames captured while the device did not send audio
        self._send = send
        self._is_open = is_open
        self._encoder = device_encoder(frame_duration_ms)
        self._frame_bytes = frame_bytes(frame_duration_ms)
        self._rng = random.Random(seed)
        self._queue: deque[tuple[bytes, asyncio.Future[None] | None]] = deque()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Open the microphone."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="microphone")

    async def say(self, pcm: bytes) -> None:
        """Speak 16 kHz PCM into the microphone; return once its last frame was captured."""
        if self._task is None or self._task.done():
            raise RuntimeError("the microphone is not running")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        frames = list(pcm_frames(pcm, self.frame_duration_ms)) or [b"\0" * self._frame_bytes]
        self._queue.extend((frame, None) for frame in frames[:-1])
        self._queue.append((frames[-1], done))
        await done

    async def stop(self) -> None:
        """Close the microphone."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._fail_pending(ConnectionError("the microphone stopped"))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        count = 0
        try:
            while True:
                frame, done = (
                    self._queue.popleft()
                    if self._queue
                    else (room_noise(self._frame_bytes, self.noise, self._rng), None)
                )
                if self._is_open():
                    await self._send(self._encoder.encode(frame))
                    self.sent += 1
                else:
                    self.muted += 1
                if done is not None and not done.done():
                    done.set_result(None)
                count += 1
                await asyncio.sleep(
                    max(0.0, start + count * self.frame_duration_ms / 1000 - loop.time())
                )
        except ConnectionError as err:  # the channel closed under the microphone
            self._fail_pending(err)

    def _fail_pending(self, err: Exception) -> None:
        while self._queue:
            _, done = self._queue.popleft()
            if done is not None and not done.done():
                done.set_exception(err)
