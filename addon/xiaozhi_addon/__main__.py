"""Run the add-on: `python -m xiaozhi_addon [--options FILE] [--data DIR] [ports]`."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
from pathlib import Path
import signal
import sys
from typing import Final

from .host import DEFAULT_PORTS, AddonHost, AddonOptions

_LOGGER = logging.getLogger("xiaozhi_addon")

# How long a thread that holds the GIL keeps it from one that waits. The codec thread encodes
# the replies (and decodes and scores the microphones if the worker process cannot: the voice
# model holds the GIL for ~0.1 ms a window); at Python's default (5 ms) the event loop, waking
# to pace a reply frame, could wait that long.
GIL_SWITCH_INTERVAL_S: Final = 0.001


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
