"""A codec queue's batches run in a worker process: its own interpreter, so its own GIL.

Both hosts (the hub in HA, the add-on) decode every device's microphone and score it for voice
here. Silero's extension holds the GIL for its ~0.1 ms a window: on HA's event loop it is time
every device waits for, and on a thread of the add-on's process it kept the event loop
waiting: every time the loop released the GIL for a socket call, it waited up to a switch
interval to get it back, and reply frames went out late in bunches (measured in
`benchmarks/test_addon.py`: at 100 devices a tenth of the longest gaps came from the loop
waiting so). In a child process the model runs on the other core and the loop never waits for it.

`WorkerProcess` is an `Offload`'s runner: it sends each batch (module-level functions and their
arguments, pickled) to the child and waits for the results on the executor thread, where the
wait holds no GIL. If the child cannot start or stops answering, the batches run here from then
on, as they would without a worker (one warning).
"""

from __future__ import annotations

import logging
from multiprocessing.connection import Connection
import os
from pathlib import Path
import pickle
import socket
import subprocess
import sys
import threading
from typing import Any, Final

from .offload import Call, run_batch

_LOGGER = logging.getLogger(__name__)

# A batch is at most 64 frames of a few milliseconds each; a child this late is stuck or gone.
WORKER_REPLY_TIMEOUT_S: Final = 5.0
WORKER_START_TIMEOUT_S: Final = 30.0  # its imports (numpy, the model's library) on a slow disk
WORKER_STOP_TIMEOUT_S: Final = 2.0
_READY: Final = b"ready"
# The child's program, and the core package it loads: by the name it has here, which is how
# the calls sent to it are pickled (`xiaozhi_core` in the add-on, the integration's in HA).
_CHILD_PROGRAM: Final = Path(__file__).with_name("worker_child.py")
_CORE_PACKAGE: Final = __name__.rpartition(".")[0]


class WorkerProcess:
    """Runs batches of calls in a child process (an `Offload` runner), started at first use.

    A host may start it ahead (`start`, ~0.06 s); the child imports numpy and the model's
    library at its first scored frame.

    The child is this Python with the core package alone (`worker_child.py`): it imports
    neither Home Assistant nor the add-on. Called from one executor thread at a time (an
    `Offload` has one batch in flight).
    """

    def __init__(self, name: str) -> None:
        """Run batches in a process called `name` (in logs)."""
        self._name = name
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._connection: Connection | None = None
        self._failed = False
        self._closed = False

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs."""
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Start the child now, not at the first batch (blocking: call it from an executor)."""
        with self._lock:
            if self._connection is None and not self._failed and not self._closed:
                try:
                    self._start()
                except (OSError, EOFError, TimeoutError) as err:
                    self._fail(err)

    def __call__(self, calls: list[Call]) -> list[tuple[Any, float]]:
        """Run `calls` in the child, in order; here if it cannot."""
        with self._lock:
            if not self._failed and not self._closed:
                try:
                    connection = self._connection or self._start()
                    connection.send_bytes(pickle.dumps(calls, pickle.HIGHEST_PROTOCOL))
                    if not connection.poll(WORKER_REPLY_TIMEOUT_S):
                        raise TimeoutError(f"no answer in {WORKER_REPLY_TIMEOUT_S:.0f} s")
                    results: list[tuple[Any, float]] = pickle.loads(connection.recv_bytes())
                except (OSError, EOFError, TimeoutError, pickle.PickleError) as err:
                    self._fail(err)
                else:
                    return results
        return run_batch(calls)

    def close(self) -> None:
        """Stop the child (blocking: call it from an executor); a batch waiting runs here."""
        self._closed = True
        if (process := self._process) is not None and process.poll() is None:
            process.terminate()  # a batch waiting for it reads the end of its input
        with self._lock:
            self._stop()

    def _start(self) -> Connection:
        ours, theirs = socket.socketpair()
        with ours, theirs:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-P",  # not the core's directory first on the path: it is no package root
                    str(_CHILD_PROGRAM),
                    str(theirs.fileno()),
                    _CORE_PACKAGE,
                    str(_CHILD_PROGRAM.parent),
                ],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                # The libraries where this process finds them (HA may add a deps directory).
                env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, sys.path))},
            )
            connection = Connection(os.dup(ours.fileno()))
        self._process, self._connection = process, connection
        if not connection.poll(WORKER_START_TIMEOUT_S) or connection.recv_bytes() != _READY:
            raise TimeoutError(f"not ready in {WORKER_START_TIMEOUT_S:.0f} s")
        _LOGGER.debug("%s started (pid %s)", self._name, process.pid)
        return connection

    def _fail(self, err: BaseException) -> None:
        if not self._closed:
            _LOGGER.warning(
                "The %s stopped (%s): its work runs in this process from now on",
                self._name,
                err or type(err).__name__,
            )
        self._failed = True
        self._stop()

    def _stop(self) -> None:
        process, connection = self._process, self._connection
        self._process = self._connection = None
        if connection is not None:
            connection.close()  # the child reads the end of its input and exits
        if process is not None:
            try:
                process.wait(WORKER_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(WORKER_STOP_TIMEOUT_S)


def serve(connection: Connection) -> None:
    """The child's loop: run each batch that comes, send back its results, until the input ends."""
    connection.send_bytes(_READY)
    while True:
        try:
            calls: list[Call] = pickle.loads(connection.recv_bytes())
        except EOFError:
            return
        results = run_batch(calls)
        try:
            reply = pickle.dumps(results, pickle.HIGHEST_PROTOCOL)
        except (pickle.PickleError, TypeError, AttributeError):  # a result that cannot travel
            reply = pickle.dumps(
                [(_travelling(result), seconds) for result, seconds in results],
                pickle.HIGHEST_PROTOCOL,
            )
        connection.send_bytes(reply)


def _travelling(result: Any) -> Any:
    """A result that pickles: an exception that does not becomes a RuntimeError with its text."""
    try:
        pickle.dumps(result)
    except (pickle.PickleError, TypeError, AttributeError):
        return RuntimeError(f"{type(result).__name__}: {result}")
    return result
