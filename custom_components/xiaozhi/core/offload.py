"""Codec work for every device, off the event loop, in order, in batches.

libopus runs through ctypes, which releases the GIL for the call (`benchmarks/gil_release.py`
measures it): decoding and encoding on an executor thread use the second core while the event
loop serves the devices. One batch is in flight per queue at a time: jobs queued meanwhile go in
the next, so the results come back in the order the jobs were queued (each device's frames stay
in order) and the loop pays one executor round trip per batch, not per frame. Urgent jobs (a
reply's next frames, which a device's playback waits for) go ahead of the others, in a batch
and in the hand-back; each kind stays in its own order. A queue may run its batches elsewhere
(`Runner`): both hosts decode and score the microphones in a worker process, because Silero's
extension holds the GIL and on the loop or a thread it would hold up the loop (`worker.py`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
import time
from typing import Any, Final
import weakref

MAX_BATCH: Final = 64  # jobs per executor run; at 60 ms frames that is 64 devices' next frame
# Results handed back per pass of the loop: a decoded frame's handler runs the voice detection,
# so a whole batch at once would hold the loop (and every device's pacing timer) for ~10 ms.
DELIVERY_SLICE: Final = 8
# ... or this share of the backlog, if more: a fixed slice caps the results handed back per
# second by the passes of a busy loop, and an overloaded host's backlog then grew without end
# (a device's next message waits for its audio: seconds, then a burst that looked like a flood).
DELIVERY_SHARE: Final = 4  # at least 1/4 of the backlog per pass

type Done = Callable[[Any, float], None]
"""Called on the loop with the job's result (or the exception it raised) and its CPU seconds."""
type Call = tuple[Callable[[Any], Any], Any]
type Runner = Callable[[list[Call]], list[tuple[Any, float]]]
"""Runs a batch's calls in order (on an executor thread): each one's result and CPU seconds."""
type _Job = tuple[Callable[[Any], Any], Any, Done]


class Offload:
    """A queue of short blocking calls, run from the loop's default executor in batches."""

    _by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Offload] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, runner: Runner | None = None) -> None:
        """Serve one event loop; `runner` runs the batches (default: on the executor thread)."""
        self._loop = loop
        self._runner = runner or run_batch
        self._queued: list[_Job] = []
        self._urgent: list[_Job] = []
        self._running = False
        self._results: deque[tuple[Done, Any, float]] = deque()
        self._urgent_results: deque[tuple[Done, Any, float]] = deque()
        self._delivering = False

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> Offload:
        """The loop's one queue (created at first use)."""
        if (offload := cls._by_loop.get(loop)) is None:
            offload = cls._by_loop[loop] = cls(loop)
        return offload

    def submit(
        self, call: Callable[[Any], Any], argument: Any, done: Done, *, urgent: bool = False
    ) -> None:
        """Run `call(argument)` off the loop; `done` gets its result on the loop, in order.

        `urgent` jobs run and come back before the others queued with them: their results are
        all handed back at the next pass of the loop, not a slice at a time behind the others.
        """
        (self._urgent if urgent else self._queued).append((call, argument, done))
        if not self._running:
            self._start()

    @property
    def backlog(self) -> int:
        """Jobs waiting for a batch (not counting the one running)."""
        return len(self._queued) + len(self._urgent)

    def run(self, call: Callable[[Any], Any], argument: Any) -> asyncio.Future[tuple[Any, float]]:
        """`submit` for a coroutine: a future of (result, CPU seconds); raises what `call` did."""
        future: asyncio.Future[tuple[Any, float]] = self._loop.create_future()

        def done(result: Any, seconds: float) -> None:
            if future.done():  # the awaiting coroutine was cancelled
                return
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result((result, seconds))

        self.submit(call, argument, done)
        return future

    def _start(self) -> None:
        urgent, self._urgent = self._urgent[:MAX_BATCH], self._urgent[MAX_BATCH:]
        room = MAX_BATCH - len(urgent)
        batch, self._queued = urgent + self._queued[:room], self._queued[room:]
        try:
            job = self._loop.run_in_executor(
                None, self._runner, [(call, argument) for call, argument, _ in batch]
            )
        except RuntimeError as err:  # the executor is shut down: the host is stopping
            for _, _, done in batch:
                done(err, 0.0)
            return
        self._running = True
        job.add_done_callback(lambda finished: self._finished(batch, len(urgent), finished))

    def _finished(
        self, batch: list[_Job], urgent: int, job: asyncio.Future[list[tuple[Any, float]]]
    ) -> None:
        self._running = False
        if (self._queued or self._urgent) and not self._loop.is_closed():
            self._start()  # the next batch runs while this one is delivered
        if job.cancelled():
            return
        if (error := job.exception()) is not None:
            results: list[tuple[Any, float]] = [(error, 0.0)] * len(batch)
        else:
            results = job.result()
        handed = [
            (done, result, seconds)
            for (_, _, done), (result, seconds) in zip(batch, results, strict=True)
        ]
        self._urgent_results.extend(handed[:urgent])
        self._results.extend(handed[urgent:])
        if not self._delivering:
            self._delivering = True
            self._deliver()

    def _deliver(self) -> None:
        """Hand back the urgent results and a slice of the rest; more after what else is due.

        A callback that raises is the loop's to report; the results after it still go back.
        """
        try:
            while self._urgent_results:
                done, result, seconds = self._urgent_results.popleft()
                done(result, seconds)
            backlog = len(self._results)
            for _ in range(min(max(DELIVERY_SLICE, -(-backlog // DELIVERY_SHARE)), backlog)):
                done, result, seconds = self._results.popleft()
                done(result, seconds)
        finally:
            if (self._results or self._urgent_results) and not self._loop.is_closed():
                self._loop.call_soon(self._deliver)
            else:
                self._delivering = False


def run_batch(calls: list[Call]) -> list[tuple[Any, float]]:
    """Every call of a batch, in order, here; an exception is its call's result."""
    results: list[tuple[Any, float]] = []
    clock = time.thread_time
    for call, argument in calls:
        started = clock()
        try:
            result = call(argument)
        except Exception as err:
            result = err
        results.append((result, clock() - started))
    return results
