"""The add-on's worker process: it decodes and scores the devices' microphones.

Started by `xiaozhi_core.worker.WorkerProcess`, which imports this module by name in the new
process: the package's import makes `xiaozhi_core` importable there too.
"""

from __future__ import annotations

from multiprocessing.connection import Connection
import signal

from xiaozhi_core.worker import serve


def main(connection: Connection) -> None:
    """Serve the batches that come on `connection` until it ends."""
    # The add-on stops it (a Ctrl-C in a terminal reaches the whole process group).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    serve(connection)
