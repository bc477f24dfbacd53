"""The link's wire format and its outbox (core/link.py)."""

from __future__ import annotations

import asyncio

import pytest

from custom_components.xiaozhi.core.errors import ProtocolError
from custom_components.xiaozhi.core.link import (
    LINK_SEND_SLICE,
    MAX_LINK_AUDIO_BACKLOG,
    MAX_LINK_QUEUE,
    Outbox,
    pack_mic_audio,
    pack_reply_audio,
    unpack_mic_audio,
    unpack_reply_audio,
)


def test_audio_frames_round_trip_and_reject_the_other_kind() -> None:
    assert unpack_mic_audio(pack_mic_audio(7, b"pcm")) == (7, b"pcm", None)
    # Scored audio: the scores (float32 on the wire) come back with it; no window is not None.
    assert unpack_mic_audio(pack_mic_audio(7, b"pcm", [(0.75, 41.5), (0.125, 30.0)])) == (
        7,
        b"pcm",
        [(0.75, 41.5), (0.125, 30.0)],
    )
    assert unpack_mic_audio(pack_mic_audio(7, b"pcm", [])) == (7, b"pcm", [])
    with pytest.raises(ProtocolError, match="cut short"):
        unpack_mic_audio(pack_mic_audio(7, b"", [(0.5, 40.0)])[:-1])
    assert unpack_reply_audio(pack_reply_audio(7, 3, b"pcm")) == (7, 3, b"pcm")
    with pytest.raises(ProtocolError):
        unpack_mic_audio(pack_reply_audio(7, 3, b"pcm"))
    with pytest.raises(ProtocolError):
        unpack_reply_audio(b"r\x00")


async def test_a_slow_peer_loses_microphone_audio_and_a_stuck_one_the_link() -> None:
    peer_reads = asyncio.Event()  # never set: the peer reads nothing
    sent: list[str | bytes] = []
    overflows: list[None] = []

    async def send(frame: str | bytes) -> None:
        await peer_reads.wait()
        sent.append(frame)

    outbox = Outbox(send, send, lambda: overflows.append(None))
    for number in range(MAX_LINK_AUDIO_BACKLOG + 1):
        outbox.put({"type": "event", "n": number})
    outbox.put_bytes(b"mic", droppable=True)
    outbox.put_bytes(b"reply")  # reply audio is never dropped
    assert outbox.audio_dropped == 1
    assert not overflows
    for number in range(MAX_LINK_QUEUE):
        outbox.put({"type": "event", "n": number})
    assert overflows == [None]  # once: the owner closes the link
    await outbox.close()


async def test_a_backlog_is_sent_a_slice_at_a_time() -> None:
    """A peer that keeps up never blocks a send; the backlog still lets the loop run between."""
    loop = asyncio.get_running_loop()
    events: list[object] = []
    count = LINK_SEND_SLICE * 3
    all_sent = asyncio.Event()

    async def send(frame: str | bytes) -> None:
        events.append(frame)
        if len(events) == count + 1:
            all_sent.set()

    outbox = Outbox(send, send, lambda: None)
    for number in range(count):
        outbox.put_bytes(bytes([number]))
    loop.call_soon(events.append, "other")  # due once the outbox has started
    await asyncio.wait_for(all_sent.wait(), 5)
    await outbox.close()
    assert "other" in events[: LINK_SEND_SLICE + 1]
    assert [event for event in events if event != "other"] == [bytes([n]) for n in range(count)]
