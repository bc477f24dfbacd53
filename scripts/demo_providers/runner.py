"""Around both demo Wyoming servers: serve until stopped, started from a command line."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
import contextlib
import logging

from wyoming.server import AsyncServer

type Start = Callable[[str], Awaitable[AsyncServer]]


async def serve(start: Start, uri: str, logger: logging.Logger) -> None:
    """Serve until cancelled."""
    server = await start(uri)
    logger.info("ready on %s", uri)
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()


def main(description: str, start: Start, logger: logging.Logger) -> None:
    """Parse `--uri` and `--debug`, then serve."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--uri", required=True, help="tcp://HOST:PORT or unix://PATH")
    parser.add_argument("--debug", action="store_true", help="log every request")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    logger.setLevel(logging.DEBUG if args.debug else logging.INFO)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(start, args.uri, logger))
