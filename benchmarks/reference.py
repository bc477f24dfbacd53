"""The hub and the reference server side by side: the same client, command and fakes.

Turns alternate between the two servers (which one goes first swaps every turn). Each turn is
`hub.user_latency`'s: the firmware-shaped client opens its microphone in auto mode and streams
the recorded command in real time; the latency is from the last voiced frame to the first reply
frame on the wire after the reply's `tts start`.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from custom_components.xiaozhi.core.messages import ListenMode
from custom_components.xiaozhi.core.timings import Stage
from tests.llm_server import LlmServer, Stream, Text
from tools.emulator import DeviceEmulator

from .hub import HubBench
from .microphone import (
    REPLY_TIMEOUT_S,
    Utterance,
    barge_in,
    make_utterance,
    percentiles,
    send_in_real_time,
)

QUIET_S = 0.3  # between turns, so nothing of the last reply is still on its way


def reply_text(turn: int) -> str:
    """The agent's answer in `turn` (as `hub.user_latency` has it)."""
    return f"Okay, the kitchen light is on. Request {turn}."


async def auto_turn(device: DeviceEmulator, utterance: Utterance) -> tuple[float, float]:
    """Say the command in auto mode; return (end of the voice, first reply frame) loop times.

    The first frame is the first after the reply's `tts start`, so nothing left of an earlier
    reply counts.
    """
    loop = asyncio.get_running_loop()
    messages, frames = len(device.received.messages), len(device.received.audio)
    await device.listen_start(ListenMode.AUTO)
    opened = loop.time()
    microphone = loop.create_task(send_in_real_time(device, utterance.packets, opened))
    try:
        await device.wait_for("tts", "start", after=messages, timeout=REPLY_TIMEOUT_S)
        started = next(
            at
            for at, message in device.received.messages[messages:]
            if message.get("type") == "tts" and message.get("state") == "start"
        )
        while not (after := [at for at, _ in device.received.audio[frames:] if at >= started]):
            await device.wait_for_audio(len(device.received.audio) + 1)
    finally:
        microphone.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await microphone
    return opened + utterance.speech_end_s, after[0]


async def side_by_side(
    bench: HubBench, reference_url: str, llm: LlmServer, turns: int
) -> dict[str, Any]:
    """Interleaved turns on the hub (default VAD) and the reference server; percentiles."""
    await bench.use(streaming_tts=False, word_delay=0)
    hub_device = await bench.make_device()
    await hub_device.connect()
    reference = DeviceEmulator("http://127.0.0.1:9/unused", relisten=False)
    await reference.connect(reference_url, token="")
    utterance = make_utterance()
    hub_s: list[float] = []
    hub_vad_s: list[float] = []
    reference_s: list[float] = []

    async def on_hub(turn: int) -> None:
        bench.providers.agent.reply = reply_text(turn)
        voice_end, first = await auto_turn(hub_device, utterance)
        timings = bench.hub.devices[hub_device.device_id].last_turn
        hub_vad_s.append(timings.marks[Stage.SPEECH_END] - voice_end)
        hub_s.append(first - voice_end)
        await barge_in(hub_device)

    async def on_reference(turn: int) -> None:
        llm.script(Stream([Text(reply_text(turn))]))
        voice_end, first = await auto_turn(reference, utterance)
        reference_s.append(first - voice_end)
        await barge_in(reference)

    try:
        for turn in range(turns):
            order = (on_hub, on_reference) if turn % 2 == 0 else (on_reference, on_hub)
            for run in order:
                await run(turn)
                await asyncio.sleep(QUIET_S)
    finally:
        await reference.close()
        await hub_device.close()
    hub_p = percentiles(hub_s, 50, 95)
    reference_p = percentiles(reference_s, 50, 95)
    return {
        "turns": turns,
        "hub_speech_end_to_first_frame_s": hub_p,
        "hub_vad_end_after_speech_s": percentiles(hub_vad_s, 50, 95),
        "reference_speech_end_to_first_frame_s": reference_p,
        "ratio_p50": hub_p["p50"] / reference_p["p50"],
        "ratio_p95": hub_p["p95"] / reference_p["p95"],
    }
