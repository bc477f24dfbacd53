"""Keep credentials in URLs out of diagnostics and logs.

Credentials are written before the host (`http://user:password@host`) or carried as a query
parameter (an MCP endpoint's `wss://api.xiaozhi.me/mcp/?token=...`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
import logging
import re
from typing import Any

from homeassistant.components.diagnostics import REDACTED

URL_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^\s/@'\"]+@")
URL_SECRET_PARAMS = re.compile(
    r"(?P<name>[?&](?:token|access_token|api_key|apikey|key|secret)=)[^&#\s'\"]+", re.IGNORECASE
)


def redact_url_credentials[T](data: T) -> T:
    """Return `data` (text, or lists and dicts of it) with URL credentials replaced."""
    if isinstance(data, str):
        text = URL_CREDENTIALS.sub(rf"\g<scheme>{REDACTED}@", data)
        return URL_SECRET_PARAMS.sub(rf"\g<name>{REDACTED}", text)  # type: ignore[return-value]
    if isinstance(data, dict):
        return {k: redact_url_credentials(v) for k, v in data.items()}  # type: ignore[return-value]
    if isinstance(data, list):
        return [redact_url_credentials(v) for v in data]  # type: ignore[return-value]
    return data


class UrlCredentialsFilter(logging.Filter):
    """Rewrites log records whose text holds URL credentials."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact the formatted message (and the exception text) in place; keep the record."""
        message = record.getMessage()
        redacted = redact_url_credentials(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and record.exc_info[1] is not None:
            text = str(record.exc_info[1])
            if redact_url_credentials(text) != text:
                record.exc_text = redact_url_credentials(
                    logging.Formatter().formatException(record.exc_info)
                )
        return True


def filter_loggers(prefixes: Iterable[str]) -> Callable[[], None]:
    """Add the filter to every existing logger under `prefixes`; return a function removing it."""
    log_filter = UrlCredentialsFilter()
    names = [
        name
        for name in list(logging.root.manager.loggerDict)
        if any(name == p or name.startswith(f"{p}.") for p in prefixes)
    ]
    loggers: list[Any] = [logging.getLogger(name) for name in names]
    for logger in loggers:
        logger.addFilter(log_filter)

    def remove() -> None:
        for logger in loggers:
            logger.removeFilter(log_filter)

    return remove
