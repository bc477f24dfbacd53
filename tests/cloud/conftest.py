"""An HTTP session for the cloud client tests (the loopback services are in tests/conftest)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest


@pytest.fixture
async def session(socket_enabled: None) -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP session, as the host would lend one."""
    async with aiohttp.ClientSession() as client_session:
        yield client_session
