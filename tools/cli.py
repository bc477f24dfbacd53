"""Run the device emulator for one turn against a server, from the command line.

    scripts/emulator --ota-url http://HA:8123/xiaozhi/ota/ --say "turn on the light"

(or `python -m tools.cli ...` from a checkout, in the project's environment).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path
import sys
import time
from typing import Final

import aiohttp

from custom_components.xiaozhi.core.const import DEVICE_SAMPLE_RATE, SAMPLE_WIDTH
from custom_components.xiaozhi.core.messages import ListenMode

from .audio import read_pcm, speech_pcm
from .emulator import FRAME_DURATIONS_MS, REPLY_TIMEOUT_S, DeviceEmulator

ACTIVATION_TIMEOUT_FACTOR: Final = 10  # the user needs a while to type the code


async def run_turn(args: argparse.Namespace) -> int:
    """Do one turn (spoken or typed) against a server and report what happened."""
    t0 = time.monotonic()

    def step(text: str) -> None:
        print(f"[{time.monotonic() - t0:6.2f} s] {text}")

    mode = ListenMode(args.mode)
    device = DeviceEmulator(
        args.ota_url,
        device_id=args.device_id,
        protocol_version=args.protocol_version,
        language=args.language,
        listen_mode=mode,
        frame_duration=args.frame_duration,
        web_client=args.web_client,
        relisten=False,  # one turn
    )
    try:
        await device.check_ota()
        if (code := device.activation_code) is not None:
            step(f"activation code {code}: add the device in Home Assistant (Settings > Devices)")
            await device.activate(timeout=args.timeout * ACTIVATION_TIMEOUT_FACTOR)
            await device.check_ota()
        step(f"OTA answer: websocket {device.websocket_settings.get('url')}")
        hello = await device.connect()
        assert hello is not None
        step(f"hello: session {hello.session_id}, reply audio {hello.audio_params.sample_rate} Hz")
        if args.text is not None:
            await device.send_text_input(args.text)
            step(f"typed: {args.text}")
        else:
            pcm = speech_pcm(args.say, args.voice) if args.say else read_pcm(args.wav)
            microphone = device.start_microphone()
            if args.wake_word:
                await device.detect(args.wake_word)
            await device.listen_start(mode)
            await microphone.say(pcm)
            seconds = len(pcm) / SAMPLE_WIDTH / DEVICE_SAMPLE_RATE
            step(f"said {seconds:.2f} s of audio in {args.frame_duration} ms frames")
            if mode is ListenMode.MANUAL:
                await device.listen_stop()
        stt = await device.wait_for("stt", timeout=args.timeout)
        step(f"stt: {stt.get('text')}")
        await device.wait_for("tts", "stop", timeout=args.timeout)
        for kind, state in (("llm", None), ("tts", "sentence_start")):
            for message in device.received.of_type(kind, state):
                step(f"{kind}: {message.get('emotion') or message.get('text')}")
        seconds = device.save_reply(args.out)
        step(f"reply: {len(device.received.audio)} frames, {seconds:.2f} s saved to {args.out}")
        return 0
    except (TimeoutError, ConnectionError, aiohttp.ClientError, ValueError) as err:
        step(f"failed: {err!r}")
        return 1
    finally:
        await device.close()


def main(argv: list[str] | None = None) -> int:
    """Run the emulator from the command line."""
    parser = argparse.ArgumentParser(description="Emulate a xiaozhi-esp32 device for one turn.")
    parser.add_argument(
        "--ota-url", required=True, help="e.g. http://192.168.1.10:8123/xiaozhi/ota/"
    )
    speech = parser.add_mutually_exclusive_group(required=True)
    speech.add_argument("--wav", type=Path, help="speech to send: 16 kHz 16-bit mono WAV or .pcm")
    speech.add_argument("--say", help="text to speak with espeak-ng instead of a WAV")
    speech.add_argument("--text", help="typed text to send instead of speech (listen detect)")
    parser.add_argument("--voice", default="en-us", help="espeak-ng voice for --say (cmn: 中文)")
    parser.add_argument("--out", type=Path, default=Path("reply.wav"), help="reply audio WAV")
    parser.add_argument("--mode", choices=[m.value for m in ListenMode], default="auto")
    parser.add_argument(
        "--frame-duration",
        type=int,
        choices=FRAME_DURATIONS_MS,
        default=60,
        help="microphone Opus frame length in ms (the firmware: 60, py-xiaozhi: 20)",
    )
    parser.add_argument(
        "--web-client",
        action="store_true",
        help="connect like a browser: device id, client id and token as query parameters",
    )
    parser.add_argument("--protocol-version", type=int, choices=(1, 2, 3))
    parser.add_argument("--wake-word", help="send `listen detect` with this text first")
    parser.add_argument("--device-id", help="MAC address (default: random)")
    parser.add_argument("--language", default="en-US")
    parser.add_argument("--timeout", type=float, default=REPLY_TIMEOUT_S)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    return asyncio.run(run_turn(args))


if __name__ == "__main__":
    sys.exit(main())
