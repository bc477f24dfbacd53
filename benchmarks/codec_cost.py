"""Cost of Opus through the hub's codec path vs. calling libopus directly.

    scripts/env python benchmarks/codec_cost.py [RESULTS.json]

Decodes 16 kHz 60 ms device frames and encodes 24 kHz 60 ms reply frames, both through
`core.codec` and through libopus via ctypes with preallocated buffers (the floor any binding can
reach), and prints microseconds per frame and their ratio (median of several rounds).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import math
from pathlib import Path
import statistics
import sys
import time

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "custom_components" / "xiaozhi"))

from core.codec import REPLY_BITRATE, REPLY_COMPLEXITY, OpusDecoder, OpusEncoder

FRAMES = 500
ROUNDS = 7
APPLICATION_AUDIO = 2049
SET_BITRATE = 4002
SET_COMPLEXITY = 4010
MAX_PACKET = 4000


def speechlike(seconds: float, rate: int) -> list[bytes]:
    """A few harmonics with a slow envelope, cut into 60 ms frames."""
    frame = rate * 60 // 1000
    samples = [
        int(
            8000
            * math.sin(2 * math.pi * 3 * i / rate)
            * sum(
                math.sin(2 * math.pi * f * i / rate) / k for k, f in enumerate((180, 360, 720), 1)
            )
        )
        for i in range(int(seconds * rate))
    ]
    pcm = b"".join(max(-32768, min(32767, s)).to_bytes(2, "little", signed=True) for s in samples)
    step = frame * 2
    return [pcm[i : i + step] for i in range(0, len(pcm) - step + 1, step)]


def per_frame_us(work: list[bytes], call: object) -> float:
    """Median microseconds per frame over ROUNDS rounds."""
    assert callable(call)
    rounds = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for item in work:
            call(item)
        rounds.append((time.perf_counter() - started) / len(work) * 1e6)
    return statistics.median(rounds)


def main() -> None:
    """Print the table."""
    lib = ctypes.CDLL(ctypes.util.find_library("opus") or "libopus.so.0")
    error = ctypes.c_int()
    lib.opus_decoder_create.restype = ctypes.c_void_p
    lib.opus_encoder_create.restype = ctypes.c_void_p
    lib.opus_encoder_ctl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]

    # Device frames: encode 16 kHz speech like the firmware, then time decoding.
    device_pcm = speechlike(FRAMES * 0.06, 16000)[:FRAMES]
    firmware = OpusEncoder(16000, 60, bitrate=None, complexity=0)
    packets = [firmware.encode(frame) for frame in device_pcm]
    ours_decoder = OpusDecoder(16000)
    raw_decoder = ctypes.c_void_p(lib.opus_decoder_create(16000, 1, ctypes.byref(error)))
    out = (ctypes.c_int16 * (16000 * 120 // 1000))()

    def raw_decode(packet: bytes) -> int:
        return int(lib.opus_decode(raw_decoder, packet, len(packet), out, len(out), 0))

    # Reply frames: 24 kHz PCM, encoded with the hub's settings.
    reply_pcm = speechlike(FRAMES * 0.06, 24000)[:FRAMES]
    ours_encoder = OpusEncoder(24000, 60)
    raw_encoder = ctypes.c_void_p(
        lib.opus_encoder_create(24000, 1, APPLICATION_AUDIO, ctypes.byref(error))
    )
    lib.opus_encoder_ctl(raw_encoder, SET_BITRATE, REPLY_BITRATE)
    lib.opus_encoder_ctl(raw_encoder, SET_COMPLEXITY, REPLY_COMPLEXITY)
    packet_out = (ctypes.c_ubyte * MAX_PACKET)()

    def raw_encode(pcm: bytes) -> int:
        return int(lib.opus_encode(raw_encoder, pcm, len(pcm) // 2, packet_out, MAX_PACKET))

    rows = [
        (
            "decode 16 kHz 60 ms",
            per_frame_us(packets, ours_decoder.decode),
            per_frame_us(packets, raw_decode),
        ),
        (
            "encode 24 kHz 60 ms",
            per_frame_us(reply_pcm, ours_encoder.encode),
            per_frame_us(reply_pcm, raw_encode),
        ),
    ]
    print(f"{'operation':<22}{'hub path':>12}{'raw libopus':>14}{'ratio':>8}")
    for name, ours, raw in rows:
        print(f"{name:<22}{ours:>10.1f}us{raw:>12.1f}us{ours / raw:>8.2f}")
    if len(sys.argv) > 1:  # a path for the numbers as JSON
        numbers = {name: {"hub_us": ours, "raw_us": raw} for name, ours, raw in rows}
        Path(sys.argv[1]).write_text(json.dumps(numbers, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
