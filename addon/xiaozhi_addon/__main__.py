"""Run the add-on: `python -m xiaozhi_addon [--options FILE] [--data DIR] [ports]`."""

from __future__ import annotations

import argparse
import asyncio
from concurrent.futures import ThreadPoolExecutor
import gc
import logging
import os
from pathlib import Path
import signal
import sys
import threading
from typing import Final

from .host import DEFAULT_PORTS, AddonHost, AddonOptions

_LOGGER = logging.getLogger("xiaozhi_addon")

# How long a thread that holds the GIL keeps it from one that waits. The codec thread decodes
# and scores every device's microphone (the voice model holds the GIL for ~0.1 ms a window), and
# at Python's default (5 ms) the event loop, waking to pace a reply frame, could wait that long.
GIL_SWITCH_INTERVAL_S: Final = 0.001
# The executor's threads (the codec's batches: decoding, voice scores, encoding) run this much
# nicer than the event loop: their work is queued ahead of time, the loop's pacing is not, so
# when the cores are busy the pacing goes first.
WORKER_NICENESS: Final = 10


def _lower_priority() -> None:
    """Make the calling executor thread nicer (Linux: niceness is per thread)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WORKER_NICENESS)
    except OSError as err:  # not allowed or not supported here: run at the loop's priority
        _LOGGER.debug("Executor thread keeps its priority: %s", err)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line: where the options and data are, and the ports (for tests)."""
    parser = argparse.ArgumentParser(prog="python -m xiaozhi_addon", description=__doc__)
    parser.add_argument("--options", type=Path, default=Path("/data/options.json"))
    parser.add_argument("--data", type=Path, default=Path("/data"))
    parser.add_argument("--host", default=None, help="address to listen on (default: all)")
    for name, port in DEFAULT_PORTS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=port)
    return parser.parse_args(argv)


async def run(args: argparse.Namespace, options: AddonOptions) -> None:
    """Serve until SIGTERM or SIGINT."""
    host = AddonHost(
        options,
        listen_host=args.host,
        http_port=args.http_port,
        websocket_port=args.websocket_port,
        mqtt_port=args.mqtt_port,
        udp_port=args.udp_port,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(initializer=_lower_priority))
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await host.start()
    # What start-up made lives as long as the add-on: the collector need not walk it again (a
    # full walk held the loop for ~20 ms in a 100-device run, a paced frame's whole margin).
    gc.freeze()
    try:
        await stop.wait()
    finally:
        _LOGGER.info("Stopping")
        await host.stop()


def main(argv: list[str] | None = None) -> None:
    """Run the add-on."""
    args = parse_args(argv)
    options = AddonOptions.load(args.options, args.data)
    logging.basicConfig(
        level=options.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    asyncio.run(run(args, options))


if __name__ == "__main__":
    main()
