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
    for key in ("user_latency", "user_latency_aggressive"):
        user = results[key]
        rows.append(
            (
                f"end of speech -> first frame, auto mode, {user['sensitivity']} VAD"
                f" ({user['turns']} turns)",
                _pcts(user["speech_end_to_first_frame_s"]),
            )
        )
        rows.append(("  of which: VAD end after speech", _pcts(user["vad_end_after_speech_s"])))
        rows.append(("  of which: VAD end -> first frame", _pcts(user["vad_end_to_first_frame_s"])))
    overhead = results["hub_overhead"]
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
    streaming = results["streaming"]
    rows.append(
        (
            f"streaming agent ({streaming['words']} words at 20/s): first frame",
            _pcts(streaming["speech_end_to_first_frame_s"]),
        )
    )
    rows.append(("  agent's last token", _pcts(streaming["speech_end_to_last_token_s"])))
    loads = [("", load) for load in results["load"].items()]
    loads += [(" over MQTT+UDP", load) for load in results.get("load_mqtt", {}).items()]
    for transport, (count, load) in loads:
        rows.append(
            (
                f"{count} devices{transport}: jitter p99 / late / loop lag p99"
                " / hub CPU per device",
                f"{_ms(load['jitter_s']['p99'])} / {load['late_frames']} of {load['frames']}"
                f" / {_ms(load['loop_lag_s']['p99'])} / {load['hub_cpu_percent_per_device']}%",
            )
        )
    memory = results["memory"]
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
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
