"""Loopback services and an HTTP session for the cloud client tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from unittest.mock import patch

import aiohttp
import pytest

from tests.cloud_servers import BlackHole, DashScopeServer, EdgeServer, mp3_clip


@pytest.fixture(scope="session")
def mp3() -> bytes:
    """A short MP3 clip like the ones Edge sends."""
    return mp3_clip()


@pytest.fixture
async def session(socket_enabled: None) -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP session, as the host would lend one."""
    async with aiohttp.ClientSession() as client_session:
        yield client_session


@pytest.fixture
async def dashscope(socket_enabled: None) -> AsyncIterator[DashScopeServer]:
    """A DashScope endpoint on loopback; fails the test if a command was malformed."""
    server = await DashScopeServer().start()
    yield server
    await server.close()
    assert server.errors == []


@pytest.fixture
async def edge(socket_enabled: None, mp3: bytes) -> AsyncIterator[EdgeServer]:
    """The Edge service on loopback, with edge-tts pointed at it (its URLs are constants)."""
    server = await EdgeServer(mp3).start()
    with (
        patch("edge_tts.communicate.WSS_URL", server.wss_url),
        patch("edge_tts.voices.VOICE_LIST", server.voices_url),
    ):
        yield server
    await server.close()
    assert server.errors == []


@pytest.fixture
async def black_hole(socket_enabled: None) -> AsyncIterator[BlackHole]:
    """A port that accepts connections and never answers."""
    hole = await BlackHole().start()
    yield hole
    await hole.close()
