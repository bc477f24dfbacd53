"""The worker process's program: `python -P worker_child.py FD PACKAGE DIRECTORY` (`worker.py`).

It serves batches on the socket FD with the core package loaded alone, under the name it has in
the parent (PACKAGE, whose files are in DIRECTORY): the parent pickles its calls by that name.
The packages around it are left empty. In Home Assistant the core sits inside the integration,
whose import would pull in Home Assistant itself (~180 MB more in the child, measured); the
child needs the codec, the voice model and the loop below, nothing else.

Runs as a script, so it imports only the standard library before the core is in place.
"""

from __future__ import annotations

import importlib
from multiprocessing.connection import Connection
import signal
import sys
import types


def load_core(package: str, directory: str) -> None:
    """Make `package` and its submodules importable from `directory`, its parents empty."""
    parts = package.split(".")
    for depth in range(1, len(parts) + 1):
        name = ".".join(parts[:depth])
        if name not in sys.modules:
            module = types.ModuleType(name)
            module.__path__ = [directory] if depth == len(parts) else []
            sys.modules[name] = module


def main(arguments: list[str]) -> None:
    """Serve the batches that come on the socket until it closes."""
    descriptor, package, directory = arguments
    # The parent stops it (a Ctrl-C in a terminal reaches the whole process group).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    load_core(package, directory)
    worker = importlib.import_module(f"{package}.worker")
    worker.serve(Connection(int(descriptor)))


if __name__ == "__main__":
    main(sys.argv[1:])
