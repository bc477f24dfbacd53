"""The worker process that runs a codec queue's batches beside the add-on's event loop."""

from __future__ import annotations

import asyncio
import logging
import operator
import os
import time

import pytest

from custom_components.xiaozhi.core import worker
from custom_components.xiaozhi.core.offload import Offload
from custom_components.xiaozhi.core.worker import WorkerProcess


@pytest.fixture
def process() -> WorkerProcess:
    """A worker process (started by its first batch); stopped after the test."""
    runner = WorkerProcess("test worker")
    yield runner
    runner.close()


def test_a_batch_runs_in_the_child_in_order_with_errors_as_results(process: WorkerProcess) -> None:
    results = process([(operator.call, os.getpid), (len, b"abc"), (int, "x"), (len, b"")])
    (pid, _), (length, _), (error, _), (empty, _) = results
    assert pid == process.pid and pid != os.getpid()
    assert (length, empty) == (3, 0)
    assert isinstance(error, ValueError)
    assert all(seconds >= 0 for _, seconds in results)


def test_started_ahead_the_child_runs_before_the_first_batch(process: WorkerProcess) -> None:
    assert process.pid is None  # started at first use ...
    process.start()  # ... or ahead, by its host
    pid = process.pid
    assert pid is not None and not _gone(pid, tries=1)
    process.start()  # once
    ((in_child, _),) = process([(operator.call, os.getpid)])
    assert in_child == pid == process.pid


def test_a_child_that_dies_leaves_the_work_here_with_one_warning(
    process: WorkerProcess, caplog: pytest.LogCaptureFixture
) -> None:
    ((pid, _),) = process([(operator.call, os.getpid)])
    os.kill(pid, 9)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            ((here, _),) = process([(operator.call, os.getpid)])
            assert here == os.getpid()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "test worker stopped" in warnings[0].getMessage()


def test_a_child_that_does_not_answer_is_stopped(
    process: WorkerProcess, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    ((pid, _),) = process([(operator.call, os.getpid)])
    monkeypatch.setattr(worker, "WORKER_REPLY_TIMEOUT_S", 0.2)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        ((result, _),) = process([(time.sleep, 3.0)])  # stuck: the batch runs here instead
    assert result is None and time.monotonic() - started < 10
    assert "no answer" in caplog.text
    assert _gone(pid)  # the stuck child was stopped


def test_closed_the_child_exits_and_batches_run_here_quietly(
    process: WorkerProcess, caplog: pytest.LogCaptureFixture
) -> None:
    ((pid, _),) = process([(operator.call, os.getpid)])
    process.close()
    assert _gone(pid)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        ((here, _),) = process([(operator.call, os.getpid)])
    assert here == os.getpid() and not caplog.records


async def test_an_offload_runs_its_batches_through_the_worker(process: WorkerProcess) -> None:
    offload = Offload(asyncio.get_running_loop(), process)
    results = await asyncio.gather(*(offload.run(len, b"x" * n) for n in range(100)))
    assert [length for length, _ in results] == list(range(100))  # in order, every one
    pid, _ = await offload.run(operator.call, os.getpid)
    assert pid == process.pid != os.getpid()


def _gone(pid: int, tries: int = 50) -> bool:
    """Whether process `pid` has ended (checked `tries` times, 0.1 s apart)."""
    for _ in range(tries):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False
