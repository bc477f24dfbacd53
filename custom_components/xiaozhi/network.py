"""Whether a failed request reached its service at all: no Home Assistant in here.

Shared by the agent's check (`llm_client.py`) and the speech services' checks
(`service_check.py`): a name that does not resolve, no network, or nothing listening at the
address is the network's or the server's state, not a wrong key or model.
"""

from __future__ import annotations

from collections.abc import Iterator
import errno
import socket
from typing import Final

import aiohttp

# Connecting failed: nothing listens there, or no route to it.
UNREACHABLE_ERRNOS: Final = frozenset(
    {errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN}
)


def causes(err: BaseException) -> Iterator[BaseException]:
    """The error, what caused it, and so on (into exception groups: one per address tried)."""
    seen: set[int] = set()
    pending: list[BaseException] = [err]
    while pending:
        current: BaseException | None = pending.pop()
        while current is not None and id(current) not in seen:
            seen.add(id(current))
            yield current
            if isinstance(current, BaseExceptionGroup):
                pending.extend(current.exceptions)
            current = current.__cause__ or current.__context__


def cannot_reach(err: BaseException) -> bool:
    """Whether the request never reached a server: no DNS answer, no network, or refused."""
    return any(
        isinstance(e, socket.gaierror | aiohttp.ClientConnectorDNSError | ConnectionRefusedError)
        or (isinstance(e, OSError) and e.errno in UNREACHABLE_ERRNOS)
        for e in causes(err)
    )
