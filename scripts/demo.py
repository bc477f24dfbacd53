"""The main job: a real Home Assistant with the integration, and an emulated device.

Starts a `hass` process with its own config dir, onboards it and sets the integration up through
its config flow (the same REST calls the UI makes), then runs the device emulator against the OTA
URL the flow shows. The preferred Assistant stays as a fresh HA has it (no speech-to-text): the
device is added through its repair, which then asks for an Assistant that can hear; the user
picks the Wyoming one. Prints each step with its timing and stops everything it started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
from pathlib import Path
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from custom_components.xiaozhi.core.messages import ListenMode  # noqa: E402
from tools.audio import speech_pcm  # noqa: E402
from tools.emulator import DeviceEmulator  # noqa: E402

HASS_START_TIMEOUT_S = 120.0
PROVIDER_START_TIMEOUT_S = 30.0
LIGHT = "light.kitchen_light"
REPLY_TIMEOUT_S = 30.0
COMMAND = "turn on the kitchen light"
VOLUME_COMMAND = "set the volume to 30"  # HassSetVolume on the media player in the device's area
VOLUME = 30
DEVICE_AREA = "Study"
CLIENT_ID_PATH = "/"
WYOMING_PIPELINE = "Wyoming"

T0 = time.monotonic()


def step(text: str) -> None:
    """Print one step with the time since the demo started."""
    print(f"[{time.monotonic() - T0:6.2f} s] {text}", flush=True)


def free_port() -> int:
    """Return a free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_config(config_dir: Path, port: int) -> None:
    """Write a minimal HA configuration with the integration linked in."""
    components = config_dir / "custom_components"
    components.mkdir(parents=True, exist_ok=True)
    link = components / "xiaozhi"
    if not link.exists():
        link.symlink_to(REPO / "custom_components" / "xiaozhi")
    (config_dir / "configuration.yaml").write_text(
        f"""homeassistant:
  name: Xiaozhi demo
  unit_system: metric
  time_zone: UTC
  country: US
  internal_url: http://127.0.0.1:{port}
http:
  server_host: 127.0.0.1
  server_port: {port}
onboarding:
config:
repairs:
logger:
  default: warning
  logs:
    custom_components.xiaozhi: info
input_boolean:
  kitchen_light_power:
    name: Kitchen light power
template:
  - light:
      - name: Kitchen Light
        unique_id: demo_kitchen_light
        state: "{{{{ is_state('input_boolean.kitchen_light_power', 'on') }}}}"
        turn_on:
          - action: input_boolean.turn_on
            target:
              entity_id: input_boolean.kitchen_light_power
        turn_off:
          - action: input_boolean.turn_off
            target:
              entity_id: input_boolean.kitchen_light_power
""",
        encoding="utf-8",
    )


def trailing_silence_s(pcm: bytes, level: int = 500) -> float:
    """How long the recording goes on after the voice stops."""
    samples = memoryview(pcm).cast("h")
    last = max((i for i in range(len(samples)) if abs(samples[i]) > level), default=0)
    return (len(samples) - last) / 16000


async def wait_for_hass(
    http: aiohttp.ClientSession, base: str, proc: subprocess.Popen[bytes]
) -> None:
    """Wait until HA answers HTTP."""
    deadline = time.monotonic() + HASS_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"hass exited with {proc.returncode}")
        with contextlib.suppress(aiohttp.ClientError):
            async with http.get(f"{base}/api/onboarding") as response:
                if response.status == 200:
                    return
        await asyncio.sleep(0.5)
    raise TimeoutError("Home Assistant did not start")


async def onboard(http: aiohttp.ClientSession, base: str) -> str:
    """Create the owner account like the onboarding UI; return an access token."""
    client_id = f"{base}{CLIENT_ID_PATH}"
    async with http.post(
        f"{base}/api/onboarding/users",
        json={
            "client_id": client_id,
            "name": "Demo",
            "username": "demo",
            "password": "demo-password",
            "language": "en",
        },
    ) as response:
        response.raise_for_status()
        auth_code = (await response.json())["auth_code"]
    async with http.post(
        f"{base}/auth/token",
        data={"grant_type": "authorization_code", "code": auth_code, "client_id": client_id},
    ) as response:
        response.raise_for_status()
        token: str = (await response.json())["access_token"]
        return token


async def add_integration(
    http: aiohttp.ClientSession, base: str, token: str, handler: str, user_input: dict[str, Any]
) -> dict[str, Any]:
    """Run an integration's config flow through the REST API the UI uses."""
    headers = {"Authorization": f"Bearer {token}"}
    async with http.post(
        f"{base}/api/config/config_entries/flow", json={"handler": handler}, headers=headers
    ) as response:
        response.raise_for_status()
        form = await response.json()
    async with http.post(
        f"{base}/api/config/config_entries/flow/{form['flow_id']}",
        json=user_input,
        headers=headers,
    ) as response:
        response.raise_for_status()
        result: dict[str, Any] = await response.json()
    if result.get("type") != "create_entry":
        raise RuntimeError(f"{handler} config flow did not create an entry: {result}")
    return result


class HassWebSocket:
    """A minimal client of HA's WebSocket API (what the frontend uses)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Wrap an authenticated connection."""
        self._ws = ws
        self._id = 0

    @classmethod
    async def connect(cls, http: aiohttp.ClientSession, base: str, token: str) -> HassWebSocket:
        """Connect and authenticate with an access token."""
        ws = await http.ws_connect(f"{base}/api/websocket")
        await ws.receive_json()  # auth_required
        await ws.send_json({"type": "auth", "access_token": token})
        if (await ws.receive_json()).get("type") != "auth_ok":
            raise RuntimeError("WebSocket authentication failed")
        return cls(ws)

    async def call(self, message: dict[str, Any]) -> Any:
        """Send a command and return its result."""
        self._id += 1
        await self._ws.send_json({"id": self._id, **message})
        while True:
            reply = await self._ws.receive_json()
            if reply.get("id") == self._id and reply.get("type") == "result":
                if not reply.get("success"):
                    raise RuntimeError(f"{message['type']} failed: {reply.get('error')}")
                return reply.get("result")

    async def close(self) -> None:
        """Close the connection."""
        await self._ws.close()


async def add_wyoming_pipeline(ws: HassWebSocket) -> str:
    """Add a "Wyoming" Assistant (as Settings -> Voice assistants does); return its name.

    The preferred "Home Assistant" Assistant stays as a fresh HA has it: no speech-to-text.
    """
    entities = await ws.call({"type": "config/entity_registry/list"})
    by_domain = {
        e["entity_id"].split(".")[0]: e["entity_id"] for e in entities if e["platform"] == "wyoming"
    }
    listing = await ws.call({"type": "assist_pipeline/pipeline/list"})
    preferred = next(p for p in listing["pipelines"] if p["id"] == listing["preferred_pipeline"])
    if preferred["stt_engine"] is not None:
        raise RuntimeError(f"a fresh HA's preferred Assistant has no STT: {preferred}")
    await ws.call(
        {
            "type": "assist_pipeline/pipeline/create",
            "name": WYOMING_PIPELINE,
            "conversation_engine": preferred["conversation_engine"],
            "conversation_language": preferred["conversation_language"],
            "language": "en",
            "stt_engine": by_domain["stt"],
            "stt_language": "en",
            "tts_engine": by_domain["tts"],
            "tts_language": "en",
            "tts_voice": None,
            "wake_word_entity": None,
            "wake_word_id": None,
        }
    )
    return (
        f"{WYOMING_PIPELINE}: {by_domain['stt']} -> {preferred['conversation_engine']} -> "
        f"{by_domain['tts']} (preferred {preferred['name']!r} has no STT)"
    )


async def light_state(http: aiohttp.ClientSession, base: str, token: str) -> str:
    """Return the demo light's state."""
    async with http.get(
        f"{base}/api/states/{LIGHT}", headers={"Authorization": f"Bearer {token}"}
    ) as response:
        response.raise_for_status()
        state: str = (await response.json())["state"]
        return state


def start_provider(module: str, port: int, log: Any) -> subprocess.Popen[bytes]:
    """Start one of the demo's Wyoming servers (a module of scripts.demo_providers)."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            f"scripts.demo_providers.{module}",
            "--uri",
            f"tcp://127.0.0.1:{port}",
        ],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


async def wait_for_port(port: int) -> None:
    """Wait until a server listens on the port."""
    deadline = time.monotonic() + PROVIDER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"nothing listens on port {port}")


async def repairs(ws: HassWebSocket) -> list[dict[str, Any]]:
    """The active xiaozhi repairs, as Settings -> Repairs lists them."""
    listing = await ws.call({"type": "repairs/list_issues"})
    return [i for i in listing["issues"] if i["domain"] == "xiaozhi" and not i["dismissed_version"]]


async def fix_flow(
    http: aiohttp.ClientSession, base: str, token: str, issue_id: str | None, body: dict[str, Any]
) -> dict[str, Any]:
    """Start a repair's fix flow (issue_id) or submit its step (body has flow_id), over REST."""
    headers = {"Authorization": f"Bearer {token}"}
    if issue_id is not None:
        url, body = f"{base}/api/repairs/issues/fix", {"handler": "xiaozhi", "issue_id": issue_id}
    else:
        url = f"{base}/api/repairs/issues/fix/{body.pop('flow_id')}"
    async with http.post(url, json=body, headers=headers) as response:
        response.raise_for_status()
        result: dict[str, Any] = await response.json()
        return result


async def enter_code(
    http: aiohttp.ClientSession, base: str, token: str, device_id: str, code: str
) -> None:
    """Do what the user does in Settings -> Repairs: open "Add <device>", type the code.

    The preferred Assistant cannot hear, so the flow goes on: pick the Wyoming one for it.
    """
    ws = await HassWebSocket.connect(http, base, token)
    try:
        waiting = next(
            i
            for i in await repairs(ws)
            if i["translation_key"] == "device_waiting"
            and i["translation_placeholders"]["mac"] == device_id
        )
        step(f'Repairs: "Add {waiting["translation_placeholders"]["name"]}"')
        form = await fix_flow(http, base, token, waiting["issue_id"], {})
        result = await fix_flow(http, base, token, None, {"flow_id": form["flow_id"], "code": code})
        if result.get("step_id") != "pipeline":
            raise RuntimeError(f"expected to be asked for an Assistant: {result}")
        problems = [i for i in await repairs(ws) if i["translation_key"] == "pipeline_no_stt"]
        if not problems:
            raise RuntimeError("no repair says the preferred Assistant cannot hear")
        step(
            f'device added; Repairs: "{problems[0]["translation_placeholders"]["device"]} cannot '
            f'hold a voice conversation" ({problems[0]["translation_placeholders"]["pipeline"]} '
            "has no speech-to-text); the flow asks for another Assistant"
        )
        result = await fix_flow(
            http, base, token, None, {"flow_id": result["flow_id"], "pipeline": WYOMING_PIPELINE}
        )
        if result.get("type") != "create_entry" or await repairs(ws):
            raise RuntimeError(f"the Assistant was not set: {result}")
        step(f"user picked {WYOMING_PIPELINE!r} for the device; Repairs is empty")
    finally:
        await ws.close()


async def device_turn(
    http: aiohttp.ClientSession, base: str, token: str, ota_url: str, speech: bytes, out: Path
) -> None:
    """Boot an emulated device against the hub, add it with its code, speak one command."""
    device = DeviceEmulator(ota_url)
    try:
        await device.check_ota()
        code = device.activation_code
        if code is None:
            raise RuntimeError("a new device should be asked to activate")
        step(f"device {device.device_id}: speaks activation code {code}")
        await enter_code(http, base, token, device.device_id, code)
        await device.activate(poll_s=0.2)
        step("the device's activation poll: it is added")
        answer = await device.check_ota()
        step(f"device: OTA answer -> {answer['websocket']['url']} with its own token")
        started = time.monotonic()
        hello = await device.connect()
        assert hello is not None
        step(
            f"device: hello answered in {1000 * (time.monotonic() - started):.0f} ms "
            f"(session {hello.session_id})"
        )
        microphone = device.start_microphone()  # streams silence until it is told to speak
        await device.listen_start(ListenMode.AUTO)
        await microphone.say(speech)
        said_at = asyncio.get_running_loop().time() - trailing_silence_s(speech)
        step(f'device: said "{COMMAND}" ({microphone.sent} Opus frames of 60 ms)')
        stt = await device.wait_for("stt", timeout=REPLY_TIMEOUT_S)
        step(f'hub -> device: stt "{stt.get("text")}"')
        await device.wait_for("tts", "stop", timeout=REPLY_TIMEOUT_S)
        if device.received.audio:
            first = device.received.audio[0][0] - said_at
            step(f"first reply audio reached the device {first:.2f} s after the speech ended")
        for message in device.received.of_type("tts", "sentence_start"):
            step(f'hub -> device: sentence "{message.get("text")}"')
        seconds = device.save_reply(out)
        step(f"device: reply of {seconds:.2f} s saved to {out}")
        await volume_turn(http, base, token, device)
    finally:
        await device.close()


async def volume_turn(
    http: aiohttp.ClientSession, base: str, token: str, device: DeviceEmulator
) -> None:
    """One device tool: HA's built-in agent sets the volume through the device's MCP tool.

    The device's media player (made from its `self.audio_speaker.set_volume` tool) is what
    HA's intents act on; in the device's area, "the volume" is the device's own.
    """
    ws = await HassWebSocket.connect(http, base, token)
    try:
        area = await ws.call({"type": "config/area_registry/create", "name": DEVICE_AREA})
        devices = await ws.call({"type": "config/device_registry/list"})
        registry_id = next(
            d["id"] for d in devices if ["xiaozhi", device.device_id] in d["identifiers"]
        )
        await ws.call(
            {
                "type": "config/device_registry/update",
                "device_id": registry_id,
                "area_id": area["area_id"],
            }
        )
    finally:
        await ws.close()
    step(f"device's tools: {len(device.mcp.tools)}; its volume is {device.mcp.volume}")
    step(f'device is in the area "{DEVICE_AREA}"; user types "{VOLUME_COMMAND}" on it')
    after = len(device.received.messages)
    await device.send_text_input(VOLUME_COMMAND)
    await device.wait_for("tts", "stop", after=after, timeout=REPLY_TIMEOUT_S)
    calls = [args for name, args in device.mcp.calls if name == "self.audio_speaker.set_volume"]
    step(f"hub -> device: MCP tools/call self.audio_speaker.set_volume {calls}")
    if device.mcp.volume != VOLUME:
        raise RuntimeError(f"the device's volume is {device.mcp.volume}, not {VOLUME}")
    step(f"device: volume is now {device.mcp.volume}")


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    """Stop processes (and their children) politely, then firmly."""
    for proc in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in processes:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def start_hass(config_dir: Path, log: Any) -> subprocess.Popen[bytes]:
    """Start `hass` in its own process group, logging to `log`."""
    return subprocess.Popen(
        [sys.executable, "-m", "homeassistant", "--config", str(config_dir), "--skip-pip"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


async def run(args: argparse.Namespace) -> int:
    """Run the demo; return the exit code."""
    work = Path(tempfile.mkdtemp(prefix="xiaozhi-demo-"))
    config_dir = work / "config"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    write_config(config_dir, port)
    speech = speech_pcm(COMMAND)
    step(f'synthesized "{COMMAND}" with espeak-ng ({len(speech) / 32000:.2f} s of audio)')

    log = (work / "hass.log").open("wb")
    stt_port, tts_port = free_port(), free_port()
    children: list[subprocess.Popen[bytes]] = []
    try:
        children += [
            start_provider("wyoming_stt", stt_port, log),
            start_provider("wyoming_tts", tts_port, log),
        ]
        await wait_for_port(stt_port)
        await wait_for_port(tts_port)
        step(
            f"started offline Wyoming servers: pocketsphinx STT :{stt_port}, "
            f"espeak-ng TTS :{tts_port}"
        )
        proc = start_hass(config_dir, log)
        children.append(proc)
        step(
            f"started Home Assistant (pid {proc.pid}, config {config_dir}, log {work / 'hass.log'})"
        )
        async with aiohttp.ClientSession() as http:
            await wait_for_hass(http, base, proc)
            step(f"Home Assistant is up at {base}")
            token = await onboard(http, base)
            step("onboarded (owner account created)")
            for port in (stt_port, tts_port):
                await add_integration(
                    http, base, token, "wyoming", {"host": "127.0.0.1", "port": port}
                )
            ws = await HassWebSocket.connect(http, base, token)
            try:
                step(f"Wyoming STT and TTS added; Assistant {await add_wyoming_pipeline(ws)}")
            finally:
                await ws.close()
            result = await add_integration(http, base, token, "xiaozhi", {})
            ota_url = result["description_placeholders"]["ota_url"]
            step(f"Xiaozhi set up through its config flow; OTA URL: {ota_url}")
            step(f"{LIGHT} is {await light_state(http, base, token)}")
            await device_turn(http, base, token, ota_url, speech, args.out.resolve())
            state = await light_state(http, base, token)
            step(f"{LIGHT} is {state}")
            if state != "on":
                raise RuntimeError("the light did not turn on")
        return 0
    except (RuntimeError, TimeoutError, ConnectionError, aiohttp.ClientError) as err:
        step(f"FAILED: {err!r}; Home Assistant's log: {work / 'hass.log'}")
        return 1
    finally:
        stop(children)
        log.close()
        step("stopped Home Assistant and the Wyoming servers")
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    """Parse arguments and run the demo."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("reply.wav"), help="reply audio WAV")
    parser.add_argument("--keep", action="store_true", help="keep the config dir and log")
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
