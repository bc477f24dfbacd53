"""Tests for the add-on's relayed channel: HA's messages reach the device as HA sent them."""

from __future__ import annotations

import asyncio

from custom_components.xiaozhi.core.const import CloseCode
from custom_components.xiaozhi.core.messages import Stt
from custom_components.xiaozhi.core.relay import RelayedChannel, RelayGate
from custom_components.xiaozhi.core.session import DeviceIdentity, DeviceSession

from .test_session import HELLO, RecordingLink


class SlowFirstTextLink(RecordingLink):
    """A device link whose first message after the hello waits on a full socket buffer."""

    async def send_text(self, text: str) -> None:
        if len(self.sent) == 1:
            await asyncio.sleep(0.05)
        await super().send_text(text)

    async def close(self, code: CloseCode, reason: str) -> None:
        self.sent.append((asyncio.get_running_loop().time(), "close", code))
        await super().close(code, reason)


async def test_has_sends_and_close_reach_the_device_in_the_order_ha_asked() -> None:
    """A send that has to wait is not overtaken by the ones HA asked for after it, nor by the
    close that follows an error alert."""
    identity = DeviceIdentity("aa:bb:cc:dd:ee:04")
    channel = RelayedChannel(RelayGate("secret"), 1, identity, None)
    link = SlowFirstTextLink()
    session = DeviceSession(link, identity, channel)
    session.start()
    await session.handle_text(HELLO)
    assert channel.session is session

    for text in ("一", "二", "三"):
        channel.send(Stt(text=text))
    channel.close(CloseCode.NORMAL, "done")
    await asyncio.wait_for(session.wait_closed(), 5)

    after_hello = [m["text"] if isinstance(m, dict) else kind for _, kind, m in link.sent[1:]]
    assert after_hello == ["一", "二", "三", "close"]
