"""The benchmark table, from the scenarios' results."""

from __future__ import annotations

import math
from typing import Any


def _ms(value: float) -> str:
    return f"{value * 1000:.0f} ms" if not math.isnan(value) else "-"


def _pcts(values: dict[str, float], *, scale_ms: bool = True) -> str:
    return " / ".join(
        (_ms(v) if scale_ms else f"{v:.1f} ms") + f" ({k})" for k, v in values.items()
    )


def format_table(results: dict[str, Any]) -> str:
    """A plain-text table of the headline numbers, one line each."""
    rows: list[tuple[str, str]] = []
    for key in ("user_latency", "user_latency_silence", "user_latency_aggressive"):
        if key not in results:
            continue
        user = results[key]
        end = user.get("end_of_speech", "silence")
        how = "+ command check" if end == "command" else "silence only"
        rows.append(
            (
                f"end of speech -> first frame, auto mode, {user['sensitivity']} VAD, {how}"
                f" ({user['turns']} turns)",
                _pcts(user["speech_end_to_first_frame_s"]),
            )
        )
        if end == "command":
            rows.append(
                ("  turns ended by the check", f"{user['ended_by_command']} of {user['turns']}")
            )
            rows.append(("  the check (STT + recognizer)", _pcts(user["command_check_s"])))
        rows.append(("  of which: VAD end after speech", _pcts(user["vad_end_after_speech_s"])))
        rows.append(("  of which: VAD end -> first frame", _pcts(user["vad_end_to_first_frame_s"])))
    if overhead := results.get("hub_overhead"):
        _overhead_rows(rows, overhead)
    if streaming := results.get("streaming"):
        _streaming_rows(rows, streaming)
    loads = [("", load) for load in results.get("load", {}).items()]
    loads += [(" over MQTT+UDP", load) for load in results.get("load_mqtt", {}).items()]
    for transport, (count, load) in loads:
        rows.append(
            (
                f"{count} devices{transport}: jitter p99 / late / >65 ms / loop lag p99"
                " / hub CPU per device",
                f"{_ms(load['jitter_s']['p99'])} / {load['late_frames']} of {load['frames']}"
                f" / {load['gaps_over_65ms']} / {_ms(load['loop_lag_s']['p99'])}"
                f" / {load['hub_cpu_percent_per_device']}%"
                + (f" ({lost} turns unanswered)" if (lost := load.get("unanswered_turns")) else "")
                + (f" ({shut} channels closed)" if (shut := load.get("closed_channels")) else ""),
            )
        )
    if memory := results.get("memory"):
        _memory_rows(rows, memory)
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _overhead_rows(rows: list[tuple[str, str]], overhead: dict[str, Any]) -> None:
    rows.append(
        (
            f"hub overhead, listen stop -> first frame ({overhead['turns']} turns)",
            _pcts(overhead["listen_stop_to_first_frame_s"]),
        )
    )
    for stage, values in overhead["stages_ms"].items():
        rows.append((f"  listen stop -> {stage}", _pcts(values, scale_ms=False)))
    rows.append(
        (
            "  decode / encode per 60 ms frame",
            f"{overhead['decode_us_per_frame']:.0f} us / {overhead['encode_us_per_frame']:.0f} us",
        )
    )


def _streaming_rows(rows: list[tuple[str, str]], streaming: dict[str, Any]) -> None:
    rows.append(
        (
            f"streaming agent ({streaming['words']} words at 20/s): first frame",
            _pcts(streaming["speech_end_to_first_frame_s"]),
        )
    )
    rows.append(
        ("  agent's 2nd sentence complete", _pcts(streaming["speech_end_to_second_sentence_s"]))
    )
    rows.append(("  agent's last token", _pcts(streaming["speech_end_to_last_token_s"])))


def _memory_rows(rows: list[tuple[str, str]], memory: dict[str, Any]) -> None:
    rows.append(
        (
            f"memory per idle device ({memory['idle_devices']} connected): RSS / Python heap",
            f"{memory['rss_per_idle_device_kib']:.0f} KiB"
            f" / {memory['heap_per_idle_device_kib']:.0f} KiB",
        )
    )
    rows.append(("RSS per device in a turn", f"{memory['rss_per_active_turn_kib']:.0f} KiB"))
    rows.append(
        (
            f"growth over {memory['turns']} turns after warm-up: RSS / heap / tasks",
            f"{memory['rss_growth_after_warmup_mib']:+.1f} MiB / "
            f"{memory['heap_growth_after_warmup_mib']:+.2f} MiB / {memory['tasks_growth']:+d}",
        )
    )


# Issue 19's goals. The reference server is not run here (see the README): its figure is the one
# issue 19 measured side by side on a machine of this kind (xiaozhi-esp32-server 0.9.6, the same
# client and instant fakes, 40 turns), from the last voiced frame to the first reply frame.
REFERENCE_SERVER_S = 0.453
LATENCY_RATIO = 0.8
HUB_OVERHEAD_S = 0.020
LOAD_DEVICES = "100"
JITTER_P99_S = 0.015
LOOP_LAG_P99_S = 0.020


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def format_goals(results: dict[str, Any], *, side_by_side: bool = True) -> str:
    """One line per goal of issue 19: the target, what was measured, PASS or MISS.

    Without `side_by_side` (a run that never starts the reference server) goal 5 is left out.
    """
    lines = []
    reference = results.get("reference")
    if reference:
        lines.append(_goal1_measured(reference))
    if (user := results.get("user_latency")) and not reference:
        p50 = user["speech_end_to_first_frame_s"]["p50"]
        ratio = p50 / REFERENCE_SERVER_S
        parts = []
        for key, name in (("user_latency_silence", "silence only"),):
            if other := results.get(key):
                other_p50 = other["speech_end_to_first_frame_s"]["p50"]
                parts.append(f"{name}: {_ms(other_p50)} = {other_p50 / REFERENCE_SERVER_S:.2f}x")
        compared = f" ({'; '.join(parts)})" if parts else ""
        lines.append(
            f"goal 1  user-felt latency <= {LATENCY_RATIO}x the reference server's"
            f" ({_ms(REFERENCE_SERVER_S)}, from issue 19, not this run), default settings"
            f" (command check + silence): p50 {_ms(p50)} = {ratio:.2f}x,"
            f" p95 {_ms(user['speech_end_to_first_frame_s']['p95'])}{compared}"
            f"  {_verdict(ratio <= LATENCY_RATIO)}"
        )
    overheads = []
    if user:
        overheads.append(("auto", user["vad_end_to_first_frame_s"]["p95"]))
    if overhead := results.get("hub_overhead"):
        overheads.append(("manual", overhead["listen_stop_to_first_frame_s"]["p95"]))
    if overheads:
        worst = max(value for _, value in overheads)
        measured = ", ".join(f"{mode} p95 {_ms(value)}" for mode, value in overheads)
        lines.append(
            f"goal 2  hub overhead after the end-of-speech decision p95 <= {_ms(HUB_OVERHEAD_S)}"
            f" (instant providers): {measured}  {_verdict(worst <= HUB_OVERHEAD_S)}"
        )
    loads = results.get("load") or {}
    if LOAD_DEVICES not in loads:
        lines.append(
            f"goal 3  {LOAD_DEVICES} devices: not measured in this run"
            f" (devices: {', '.join(loads) or 'none'})  MISS"
        )
    for count, load in loads.items():
        if int(count) < int(LOAD_DEVICES):
            continue
        jitter, lag = load["jitter_s"]["p99"], load["loop_lag_s"]["p99"]
        slow = load["gaps_over_65ms"]
        worst = f" (longest gap {_ms(gap)}" if (gap := load.get("max_gap_s")) else ""
        if worst and (tail := load.get("gap_s")):
            worst += f", p99.9 {_ms(tail['p99.9'])}, {load['gaps_over_60ms']} over 60 ms"
        worst += ")" if worst else ""
        closed = load.get("closed_channels", 0)
        ok = jitter <= JITTER_P99_S and slow == 0 and lag <= LOOP_LAG_P99_S and not closed
        target = "target" if count == LOAD_DEVICES else "reported"
        lines.append(
            f"goal 3  {count} devices ({target}: jitter p99 <= {_ms(JITTER_P99_S)}, 0 frames"
            f" > 65 ms, loop lag p99 <= {_ms(LOOP_LAG_P99_S)}): jitter {_ms(jitter)},"
            f" {slow} of {load['frames']} frames > 65 ms{worst}, loop lag {_ms(lag)}"
            + (f", {closed} channels closed" if closed else "")
            + (f"  {_verdict(ok)}" if count == LOAD_DEVICES else "")
        )
    if streaming := results.get("streaming"):
        first = streaming["speech_end_to_first_frame_s"]["p95"]
        second = streaming["speech_end_to_second_sentence_s"]["p50"]
        once = streaming["turns_with_each_sentence_once"]
        lead = streaming["subtitle_to_next_frame_s"]["p100"]
        ok = first < second and once == streaming["turns"] and lead <= 0.1
        lines.append(
            "goal 4  streamed 3 sentences: first audio before the agent's 2nd sentence is"
            f" complete, each sentence_start once, in step: first frame p95 {_ms(first)} vs 2nd"
            f" sentence {_ms(second)}; once in {once} of {streaming['turns']} turns; subtitle"
            f" -> its frame max {_ms(lead)}  {_verdict(ok)}"
        )
    if side_by_side:
        lines.append(
            f"goal 5  reference server side by side in scripts/bench: {reference['turns']}"
            f" interleaved turns each, same client and fakes  PASS"
            if reference
            else "goal 5  reference server side by side: not run by scripts/bench"
            " (set XIAOZHI_REFERENCE_SERVER, see README)  MISS"
        )
    return "\n".join(lines)


def _goal1_measured(reference: dict[str, Any]) -> str:
    hub = reference["hub_speech_end_to_first_frame_s"]["p50"]
    ref = reference["reference_speech_end_to_first_frame_s"]["p50"]
    ratio = reference["ratio_p50"]
    return (
        f"goal 1  user-felt latency <= {LATENCY_RATIO}x the reference server's (measured"
        f" side by side in this run): hub p50 {_ms(hub)}, reference {_ms(ref)}"
        f" = {ratio:.2f}x  {_verdict(ratio <= LATENCY_RATIO)}"
    )


def format_reference(reference: dict[str, Any]) -> str:
    """The side-by-side comparison (`benchmarks/test_reference.py`), one line each."""
    hub = reference["hub_speech_end_to_first_frame_s"]
    ref = reference["reference_speech_end_to_first_frame_s"]
    rows = [
        (
            f"last voiced frame -> first reply frame, auto mode ({reference['turns']}"
            " interleaved turns each): hub",
            _pcts(hub),
        ),
        ("  of which: hub VAD end after speech", _pcts(reference["hub_vad_end_after_speech_s"])),
        ("  reference server (xiaozhi-esp32-server)", _pcts(ref)),
        (
            "  hub / reference",
            f"{reference['ratio_p50']:.2f}x (p50) / {reference['ratio_p95']:.2f}x (p95)",
        ),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
