"""Voice-turn benchmarks: a real Home Assistant in this process, devices over loopback.

The scenarios take the pieces the test suite builds (HA with the integration, instant test
providers, a device factory) and return plain dicts; `benchmarks/test_hub.py` runs them at full
size and prints the table, `tests/test_bench_smoke.py` runs them small to keep them working.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
import contextlib
from dataclasses import dataclass
import gc
import json
import os
from pathlib import Path
import resource
import sys
import time
import tracemalloc
from typing import Any
from unittest import mock

from homeassistant.components.assist_pipeline import async_get_pipeline, async_update_pipeline
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er

from custom_components.xiaozhi.assist_satellite import XiaozhiSatellite
from custom_components.xiaozhi.const import (
    DOMAIN,
    END_OF_SPEECH_COMMAND,
    END_OF_SPEECH_KEY,
    END_OF_SPEECH_SILENCE,
    TRANSPORT_MQTT,
    TRANSPORT_WEBSOCKET,
)
from custom_components.xiaozhi.core.messages import ListenMode
from custom_components.xiaozhi.core.sentences import split_sentences
from custom_components.xiaozhi.core.timings import EndedBy, Stage
from custom_components.xiaozhi.hub import XiaozhiHub
from tests.providers import Providers
from tools.emulator import DeviceEmulator

from .devices import merge_pacing_reports
from .microphone import (
    MANUAL_SPEECH_FRAMES,
    Utterance,
    barge_in,
    make_utterance,
    manual_turn,
    percentiles,
    send_in_real_time,
)

type MakeDevice = Callable[..., Awaitable[DeviceEmulator]]

LOOP_PROBE_S = 0.02  # how often the event-loop lag probe wakes up
DEVICES_PER_PROCESS = 25  # emulated devices sharing one process (and event loop) in the load
MAX_REPORT_BYTES = 16 * 1024 * 1024  # a device process's report line (raw jitter samples)
STREAMED_SENTENCES = (
    "Sure, the kitchen light is on now. "
    "I also lowered the blinds a little for you. "
    "Tell me if you want anything else."
)
COMMAND = "turn on the kitchen light"  # the benchmarks' spoken command
TOKEN_S = 0.05  # the streaming agent's pace: 20 words a second
MEMORY_TURN_DEVICES = 20  # devices taking turns at once in the leak check


@dataclass
class HubBench:
    """Home Assistant with the integration and the test providers, and a device factory."""

    hass: HomeAssistant
    providers: Providers
    make_device: MakeDevice
    ota_url: str

    @property
    def hub(self) -> XiaozhiHub:
        """The integration's hub."""
        hub: XiaozhiHub = self.hass.config_entries.async_entries(DOMAIN)[0].runtime_data
        return hub

    def satellite(self, device: DeviceEmulator) -> XiaozhiSatellite:
        """The satellite entity serving `device`."""
        voice = self.hub.devices[device.device_id].handler
        assert isinstance(voice, XiaozhiSatellite)
        return voice

    async def use(self, *, streaming_tts: bool, word_delay: float) -> None:
        """Answer with the test agent (at `word_delay` per word) and the tone TTS."""
        self.providers.agent.word_delay = word_delay
        tts = self.providers.streaming_tts if streaming_tts else self.providers.tts
        await async_update_pipeline(
            self.hass,
            async_get_pipeline(self.hass),
            conversation_engine=self.providers.agent.entity_id,
            tts_engine=tts.entity_id,
        )


# --- what the user feels ---------------------------------------------------------------------


async def user_latency(
    bench: HubBench,
    turns: int,
    sensitivity: str = "default",
    end_of_speech: str = END_OF_SPEECH_COMMAND,
) -> dict[str, Any]:
    """End of real speech -> first reply frame on the wire, auto mode, at a VAD sensitivity.

    With the command check (`end_of_speech` "command", the default) the test STT transcribes
    the words whose voice it has heard, as a real engine would, and answers at once.
    """
    await bench.use(streaming_tts=False, word_delay=0)
    device = await bench.make_device()
    await device.connect()
    await _select(bench, device, "vad_sensitivity", sensitivity)
    await _select(bench, device, END_OF_SPEECH_KEY, end_of_speech)
    utterance = make_utterance(COMMAND)
    bench.providers.stt.say(utterance.pcm, [(COMMAND, utterance.speech_end_s)])
    latencies, overheads, stages, ended_by, checks = [], [], [], [], []
    for turn in range(turns):
        bench.providers.agent.reply = f"Okay, the kitchen light is on. Request {turn}."
        opened, first = await _auto_turn(device, utterance)
        timings = bench.hub.devices[device.device_id].last_turn
        latencies.append(first - (opened + utterance.speech_end_s))
        overheads.append(first - timings.marks[Stage.SPEECH_END])
        stages.append(timings.since_speech_end())
        ended_by.append(timings.ended_by)
        if timings.check_s is not None:
            checks.append(timings.check_s)
        await barge_in(device)
    await device.close()
    bench.providers.stt.say(b"", [])
    return {
        "turns": turns,
        "sensitivity": sensitivity,
        "end_of_speech": end_of_speech,
        "ended_by_command": ended_by.count(EndedBy.COMMAND),
        "command_check_s": percentiles(checks, 50, 95),
        "speech_end_to_first_frame_s": percentiles(latencies, 50, 95),
        "vad_end_to_first_frame_s": percentiles(overheads, 50, 95),
        "vad_end_after_speech_s": percentiles(
            [lat - over for lat, over in zip(latencies, overheads, strict=True)], 50, 95
        ),
        "stages_ms": _stage_percentiles(stages),
    }


async def _select(bench: HubBench, device: DeviceEmulator, key: str, option: str) -> None:
    entity_id = er.async_get(bench.hass).async_get_entity_id(
        "select", DOMAIN, f"{device.device_id}-{key}"
    )
    await bench.hass.services.async_call(
        "select", "select_option", {"entity_id": entity_id, "option": option}, blocking=True
    )


async def _auto_turn(device: DeviceEmulator, utterance: Utterance) -> tuple[float, float]:
    """Say the command in auto mode; return (microphone opened, first reply frame) times."""
    loop = asyncio.get_running_loop()
    before = len(device.received.audio)
    await device.listen_start(ListenMode.AUTO)
    opened = loop.time()
    microphone = loop.create_task(send_in_real_time(device, utterance.packets, opened))
    try:
        await device.wait_for_audio(before + 1)
    finally:
        microphone.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await microphone
    return opened, device.received.audio[before][0]


# --- hub overhead --------------------------------------------------------------------------------


async def hub_overhead(bench: HubBench, turns: int) -> dict[str, Any]:
    """Manual mode: `listen stop` -> first reply frame, with providers that answer at once."""
    await bench.use(streaming_tts=False, word_delay=0)
    device = await bench.make_device()
    await device.connect()
    utterance = make_utterance()
    packets = utterance.packets[:MANUAL_SPEECH_FRAMES]
    overheads, stages = [], []
    known = bench.hub.devices[device.device_id]
    for _ in range(100):  # a session relayed from the add-on reaches HA just after the hello
        if known.session is not None:
            break
        await asyncio.sleep(0.01)
    session = known.session
    assert session is not None
    codec_before = session.codec_stats.as_dict()
    for turn in range(turns):
        bench.providers.agent.reply = f"Okay. Request {turn}."
        first = await manual_turn(device, packets)
        timings = bench.hub.devices[device.device_id].last_turn
        overheads.append(device.received.audio[first][0] - timings.marks[Stage.SPEECH_END])
        stages.append(timings.since_speech_end())
        await barge_in(device)
    codec = session.codec_stats.as_dict()
    await device.close()
    return {
        "turns": turns,
        "listen_stop_to_first_frame_s": percentiles(overheads, 50, 95, 99),
        "stages_ms": _stage_percentiles(stages),
        "decode_us_per_frame": _delta_per_frame(codec, codec_before, "decode"),
        "encode_us_per_frame": _delta_per_frame(codec, codec_before, "encode"),
    }


def _stage_percentiles(stages: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    names = [stage.value for stage in Stage if stage is not Stage.SPEECH_END]
    return {
        name: percentiles([s[name] for s in stages if name in s], 50, 95, 99)
        for name in names
        if any(name in s for s in stages)
    }


def _delta_per_frame(now: dict[str, float], before: dict[str, float], kind: str) -> float:
    frames = now[f"frames_{kind}d"] - before[f"frames_{kind}d"]
    return (now[f"{kind}_s"] - before[f"{kind}_s"]) / frames * 1e6 if frames else float("nan")


# --- streaming -----------------------------------------------------------------------------------


async def streaming(bench: HubBench, turns: int) -> dict[str, Any]:
    """An agent streaming 3 sentences at TOKEN_S a word: first audio vs. its second sentence.

    Also checks the subtitles: each sentence once, in order, and each just before a frame.
    """
    await bench.use(streaming_tts=True, word_delay=TOKEN_S)
    bench.providers.agent.reply = STREAMED_SENTENCES
    words = STREAMED_SENTENCES.split()
    # The agent says word k at (k + 1) * TOKEN_S; the second sentence ends with its 2nd period.
    second_end = [i for i, word in enumerate(words) if word.endswith(".")][1] + 1
    expected = split_sentences(STREAMED_SENTENCES)
    device = await bench.make_device()
    await device.connect()
    packets = make_utterance().packets[:MANUAL_SPEECH_FRAMES]
    loop = asyncio.get_running_loop()
    first_audio: list[float] = []
    second_sentence: list[float] = []
    last_token: list[float] = []
    subtitle_lead: list[float] = []
    subtitles_right = 0
    for _ in range(turns):
        before = len(device.received.audio)
        after = len(device.received.messages)
        await device.listen_start(ListenMode.MANUAL)
        await send_in_real_time(device, packets, loop.time())
        bench.providers.agent.finished_at = None
        await device.listen_stop()
        speech_end = loop.time()
        await device.wait_for_audio(before + 1)
        first_audio.append(device.received.audio[before][0] - speech_end)
        await device.wait_for("tts", "stop", after=after)
        finished = bench.providers.agent.finished_at
        assert finished is not None
        last_token.append(finished - speech_end)
        second_sentence.append(finished - (len(words) - second_end) * TOKEN_S - speech_end)
        frames = [t for t, _ in device.received.audio[before:]]
        shown = [
            (t, m["text"])
            for t, m in device.received.messages[after:]
            if m["type"] == "tts" and m.get("state") == "sentence_start"
        ]
        subtitles_right += [text for _, text in shown] == expected
        for at, _ in shown:
            if following := [t for t in frames if t >= at]:
                subtitle_lead.append(following[0] - at)
    await device.close()
    return {
        "turns": turns,
        "words": len(words),
        "speech_end_to_first_frame_s": percentiles(first_audio, 50, 95),
        "speech_end_to_second_sentence_s": percentiles(second_sentence, 50, 95),
        "speech_end_to_last_token_s": percentiles(last_token, 50, 95),
        "turns_with_each_sentence_once": subtitles_right,
        "subtitle_to_next_frame_s": percentiles(subtitle_lead, 50, 100),
    }


# --- load and memory, with the devices in another process ------------------------------------


class LoopLagProbe:
    """How late the event loop wakes a task that asked to sleep LOOP_PROBE_S."""

    def __init__(self) -> None:
        """Not started."""
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(LOOP_PROBE_S)
            self.lags.append(loop.time() - started - LOOP_PROBE_S)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[LoopLagProbe]:
        """Probe while the block runs."""
        self.lags.clear()
        self._task = asyncio.get_running_loop().create_task(self._run())
        try:
            yield self
        finally:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def rss_mib() -> float:
    """Resident memory of this process now, in MiB."""
    gc.collect()
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def cpu_s() -> float:
    """CPU seconds this process has used (all threads: the loop, executors, VAD)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class DeviceProcess:
    """`benchmarks.devices` in a child process: many emulated devices, driven by stdin lines."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        """Wrap a started child."""
        self.process = process

    @classmethod
    @contextlib.asynccontextmanager
    async def start(cls, ota_url: str, *args: str) -> AsyncIterator[DeviceProcess]:
        """Start the child; kill it if the block fails."""
        root = Path(__file__).resolve().parent.parent
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "benchmarks.devices",
            ota_url,
            *args,
            cwd=root,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=MAX_REPORT_BYTES,
        )
        try:
            yield cls(process)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()

    async def read(self) -> dict[str, Any]:
        """The child's next report (one JSON object per line)."""
        assert self.process.stdout is not None
        line = await self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"device process ended ({await self.process.wait()})")
        report: dict[str, Any] = json.loads(line)
        return report

    async def tell(self, command: str) -> None:
        """Send the child one command line."""
        assert self.process.stdin is not None
        self.process.stdin.write(command.encode() + b"\n")
        await self.process.stdin.drain()


async def load(
    bench: HubBench, counts: list[int], seconds: float, *, transport: str = TRANSPORT_WEBSOCKET
) -> dict[str, Any]:
    """Devices streaming their microphones in realtime mode while replies play to all of them.

    Over the WebSocket, or always connected (MQTT for messages, UDP for audio): the fleet's
    devices are bound with `transport`, so their OTA answers send them there.
    """
    with mock.patch("custom_components.xiaozhi.store.DEFAULT_TRANSPORT", transport):
        return await _load(bench, counts, seconds)


async def _load(bench: HubBench, counts: list[int], seconds: float) -> dict[str, Any]:
    await bench.use(streaming_tts=False, word_delay=0)
    bench.providers.agent.reply = "Okay, the kitchen light is on now, and the door is locked."
    results: dict[str, Any] = {}
    probe = LoopLagProbe()
    for count in counts:
        slots = -(-count // DEVICES_PER_PROCESS)
        shares = [count // slots + (slot < count % slots) for slot in range(slots)]
        async with contextlib.AsyncExitStack() as stack:
            children = [
                await stack.enter_async_context(
                    DeviceProcess.start(
                        bench.ota_url,
                        "load",
                        *("--devices", str(share), "--seconds", str(seconds)),
                        *("--slot", str(slot), "--slots", str(slots)),
                    )
                )
                for slot, share in enumerate(shares)
            ]
            for child in children:
                await child.read()  # connected
            cpu_before, wall_before = cpu_s(), time.monotonic()
            async with probe.running():
                for child in children:
                    await child.tell("go")
                report = merge_pacing_reports([await child.read() for child in children])
            cpu = cpu_s() - cpu_before
            wall = time.monotonic() - wall_before
        report["loop_lag_s"] = percentiles(probe.lags, 50, 99)
        report["hub_cpu_percent_per_device"] = round(cpu / wall / count * 100, 2)
        report["hub_cpu_percent"] = round(cpu / wall * 100, 1)
        results[str(count)] = report
    return results


def traced_mib() -> float:
    """Python heap in use now (tracemalloc), in MiB."""
    return tracemalloc.get_traced_memory()[0] / 2**20


@contextlib.asynccontextmanager
async def rss_peak(every_s: float = 0.05) -> AsyncIterator[list[float]]:
    """Sample RSS while the block runs; the list holds the samples."""
    samples: list[float] = []

    async def sample() -> None:
        while True:
            samples.append(rss_mib())
            await asyncio.sleep(every_s)

    task = asyncio.get_running_loop().create_task(sample())
    try:
        yield samples
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def memory(bench: HubBench, idle_devices: int, turns: int) -> dict[str, Any]:
    """Memory per idle connected device, per device in a turn, and growth over many turns.

    RSS is what the system sees; tracemalloc counts the Python heap only (not libopus or the
    VAD model), but is not blurred by memory freed earlier and reused.
    """
    await bench.use(streaming_tts=False, word_delay=0)
    bench.providers.agent.reply = "Okay."
    result: dict[str, Any] = {}
    tracemalloc.start()
    try:
        rss_before, heap_before = rss_mib(), traced_mib()
        async with DeviceProcess.start(
            bench.ota_url, "idle", "--devices", str(idle_devices)
        ) as child:
            await child.read()
            await asyncio.sleep(1.0)
            rss_connected, heap_connected = rss_mib(), traced_mib()
            await child.tell("stop")
            await child.read()
        result["idle_devices"] = idle_devices
        result["rss_per_idle_device_kib"] = (rss_connected - rss_before) / idle_devices * 1024
        result["heap_per_idle_device_kib"] = (heap_connected - heap_before) / idle_devices * 1024

        devices = min(idle_devices, MEMORY_TURN_DEVICES)
        async with DeviceProcess.start(
            bench.ota_url, "turns", "--devices", str(devices), "--turns", str(turns // devices)
        ) as child:
            await child.read()  # connected
            rss_idle, heap_idle = rss_mib(), traced_mib()
            tasks_idle = len(asyncio.all_tasks())
            async with rss_peak() as samples:
                await child.tell("go")
                warm = await child.read()  # a tenth of the turns: caches and pools are warm
            rss_warm, heap_warm = rss_mib(), traced_mib()
            await child.tell("go")
            done = await child.read()
            await asyncio.sleep(0.5)
            rss_end, heap_end = rss_mib(), traced_mib()
            tasks_end = len(asyncio.all_tasks())
            await child.tell("stop")
            await child.read()
    finally:
        tracemalloc.stop()
    result["turns"] = warm["turns"] + done["turns"]
    result["turn_frames"] = warm["frames"] + done["frames"]
    result["concurrent_turns"] = warm["peak"]
    result["rss_per_active_turn_kib"] = max(0.0, max(samples) - rss_idle) / devices * 1024
    result["rss_growth_after_warmup_mib"] = rss_end - rss_warm
    result["heap_growth_after_warmup_mib"] = heap_end - heap_warm
    result["heap_growth_per_turn_bytes"] = (heap_end - heap_warm) * 2**20 / max(1, done["turns"])
    result["heap_idle_to_end_mib"] = heap_end - heap_idle
    result["tasks_growth"] = tasks_end - tasks_idle
    return result


# --- all of it -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    """How much of each scenario to run."""

    latency_turns: int
    silence_turns: int
    aggressive_turns: int
    overhead_turns: int
    streaming_turns: int
    load_counts: list[int]
    load_seconds: float
    mqtt_load_counts: list[int]
    idle_devices: int
    memory_turns: int


QUICK = Sizes(
    latency_turns=10,
    silence_turns=10,
    aggressive_turns=5,
    overhead_turns=40,
    streaming_turns=3,
    load_counts=[100],
    load_seconds=15.0,
    mqtt_load_counts=[50],
    idle_devices=20,
    memory_turns=100,
)
FULL = Sizes(
    latency_turns=50,
    silence_turns=30,
    aggressive_turns=20,
    overhead_turns=200,
    streaming_turns=10,
    load_counts=[1, 10, 50, 100, 200],
    load_seconds=15.0,
    mqtt_load_counts=[50],
    idle_devices=100,
    memory_turns=1000,
)
SMOKE = Sizes(
    latency_turns=2,
    silence_turns=1,
    aggressive_turns=1,
    overhead_turns=3,
    streaming_turns=1,
    load_counts=[5],
    load_seconds=4.0,
    mqtt_load_counts=[5],
    idle_devices=5,
    memory_turns=20,
)


SCENARIOS = (
    "user_latency",
    "user_latency_silence",
    "user_latency_aggressive",
    "hub_overhead",
    "streaming",
    "load",
    "load_mqtt",
    "memory",
)


async def run_all(bench: HubBench, sizes: Sizes, only: Iterable[str] = SCENARIOS) -> dict[str, Any]:
    """Every scenario (or those named in `only`), one after the other."""
    # The test harness runs the loop in asyncio's debug mode, which records a stack trace for
    # every task and callback; Home Assistant in production does not.
    bench.hass.loop.set_debug(False)
    runs: dict[str, Callable[[], Awaitable[dict[str, Any]]]] = {
        "user_latency": lambda: user_latency(bench, sizes.latency_turns),
        "user_latency_silence": lambda: user_latency(
            bench, sizes.silence_turns, end_of_speech=END_OF_SPEECH_SILENCE
        ),
        "user_latency_aggressive": lambda: user_latency(
            bench, sizes.aggressive_turns, "aggressive", END_OF_SPEECH_SILENCE
        ),
        "hub_overhead": lambda: hub_overhead(bench, sizes.overhead_turns),
        "streaming": lambda: streaming(bench, sizes.streaming_turns),
        "load": lambda: load(bench, sizes.load_counts, sizes.load_seconds),
        "load_mqtt": lambda: load(
            bench, sizes.mqtt_load_counts, sizes.load_seconds, transport=TRANSPORT_MQTT
        ),
        "memory": lambda: memory(bench, sizes.idle_devices, sizes.memory_turns),
    }
    return {name: await runs[name]() for name in SCENARIOS if name in set(only)}
