"""Open and drop many device connections: mid-handshake and mid-reply.

    scripts/env python scripts/abuse.py --ota-url http://127.0.0.1:8123/xiaozhi/ota/ \
        --handshake 1000 --reply 100

Each "handshake" cycle connects and drops the TCP connection before (or right after) the hello;
each "reply" cycle says a command and drops the connection as soon as the first reply audio
arrives, the way a device that loses Wi-Fi or is unplugged does (no close frame). Loopback only.
The tests run the same cycles against an in-process Home Assistant.
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass
from pathlib import Path
import random
import sys

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from custom_components.xiaozhi.core.messages import ListenMode
from tools.audio import speech_pcm
from tools.emulator import DeviceEmulator

REPLY_TIMEOUT_S = 10.0
SILENCE_FRAME = b"\0" * 1920
TRAILING_SILENCE_FRAMES = 10  # enough for the hub to decide the speech ended


@dataclass
class AbuseResult:
    """What the cycles saw."""

    handshake_drops: int = 0
    reply_drops: int = 0
    replies_missing: int = 0


async def handshake_cycle(
    ota: dict[str, object], url: str, device_id: str, client_id: str, rng: random.Random
) -> None:
    """Connect and drop before or right after the hello."""
    device = DeviceEmulator(url, device_id=device_id, client_id=client_id, relisten=False)
    device.use_ota_answer(ota)
    try:
        await device.connect(hello=rng.random() < 0.5)
    finally:
        await device.drop()


async def reply_cycle(
    ota: dict[str, object], url: str, device_id: str, client_id: str, speech: bytes
) -> bool:
    """Say a command, drop as soon as reply audio arrives; return whether it arrived."""
    device = DeviceEmulator(url, device_id=device_id, client_id=client_id, relisten=False)
    device.use_ota_answer(ota)
    try:
        await device.connect()
        await device.listen_start(ListenMode.AUTO)
        await device.stream_pcm(speech + SILENCE_FRAME * TRAILING_SILENCE_FRAMES, realtime=False)
        await device.wait_for_audio(timeout=REPLY_TIMEOUT_S)
        return True
    except (TimeoutError, aiohttp.ClientError, ConnectionError):
        return False
    finally:
        await device.drop()


async def abuse(
    ota_url: str,
    device_id: str,
    handshakes: int,
    replies: int,
    seed: int = 1,
    client_id: str | None = None,
) -> AbuseResult:
    """Run the cycles against a hub, as a device (MAC + Client-Id) already added to it."""
    rng = random.Random(seed)
    result = AbuseResult()
    probe = DeviceEmulator(ota_url, device_id=device_id, client_id=client_id)
    client_id = probe.client_id
    try:
        ota = await probe.check_ota()
        if (code := probe.activation_code) is not None:
            print(f"Add device {device_id} in Home Assistant with code {code}")
            await probe.activate()
            ota = await probe.check_ota()
    finally:
        await probe.close()
    for _ in range(handshakes):
        await handshake_cycle(ota, ota_url, device_id, client_id, rng)
        result.handshake_drops += 1
    speech = speech_pcm("turn on the kitchen light") if replies else b""
    for _ in range(replies):
        if not await reply_cycle(ota, ota_url, device_id, client_id, speech):
            result.replies_missing += 1
        result.reply_drops += 1
    return result


def main() -> int:
    """Run from the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ota-url", required=True)
    parser.add_argument("--device-id", default="02:ab:05:e0:00:01", help="MAC to act as")
    parser.add_argument(
        "--client-id", default="8d7a52f0-0000-4000-8000-00000000ab01", help="Client-Id to act as"
    )
    parser.add_argument("--handshake", type=int, default=1000, help="mid-handshake drops")
    parser.add_argument("--reply", type=int, default=100, help="mid-reply drops")
    args = parser.parse_args()
    if not any(host in args.ota_url for host in ("127.0.0.1", "[::1]", "localhost")):
        parser.error("abuse runs against loopback only")
    result = asyncio.run(
        abuse(args.ota_url, args.device_id, args.handshake, args.reply, client_id=args.client_id)
    )
    print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
