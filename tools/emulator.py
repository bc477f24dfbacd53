"""A device emulator that behaves like the xiaozhi-esp32 firmware on the wire.

It makes the boot-time OTA check with the firmware's headers and body, opens the WebSocket with
the firmware's headers (or, as a browser client, with query parameters) or, when the OTA answer
has an `mqtt` block, keeps an MQTT connection from boot on (never subscribing) and opens an
AES-CTR UDP audio channel per conversation (protocol.md §7), says hello, listens in
auto, manual or realtime mode, streams 60 ms (or 20 ms) Opus frames from PCM or a WAV file in any
binary protocol version, answers MCP like the firmware (tools/mcp_server.py: tools, paging,
camera uploads), and records everything the server sends (and the reply audio, decodable to a
WAV). Tests, the demo and the benchmarks all use it; `scripts/
emulator` (`tools/cli.py`) runs it against a user's own Home Assistant.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from enum import StrEnum
import json
import logging
from pathlib import Path
import random
import struct
from typing import Final
import uuid

import aiohttp
import aiomqtt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from yarl import URL

from custom_components.xiaozhi.core import framing
from custom_components.xiaozhi.core.codec import OpusDecoder
from custom_components.xiaozhi.core.const import (
    DEVICE_FRAME_DURATION_MS,
    HELLO_TIMEOUT_S,
    REPLY_FRAME_DURATION_MS,
    SAMPLE_WIDTH,
)
from custom_components.xiaozhi.core.messages import (
    AudioParams,
    ClientHello,
    JsonObject,
    ListenMode,
    ListenState,
    ServerHello,
    parse_server_message,
)

from .audio import pcm_frames, write_wav
from .mcp_server import DeviceMcpServer
from .microphone import DEVICE_OPUS_COMPLEXITY, Microphone, device_encoder

_LOGGER = logging.getLogger(__name__)

__all__ = ["DEVICE_OPUS_COMPLEXITY", "DeviceEmulator", "DeviceState", "Received", "Transport"]

FIRMWARE_VERSION: Final = "2.0.3"
BOARD: Final = "xiaozhi-emulator"
FRAME_DURATIONS_MS: Final = (20, 60)  # the firmware sends 60 ms; py-xiaozhi sends 20 ms
REPLY_TIMEOUT_S: Final = 30.0
ACTIVATION_POLL_S: Final = 3.0  # the firmware waits 3 s after a 202
DEFAULT_REPLY_SAMPLE_RATE: Final = 24000  # the firmware's default without a server hello
MQTT_DEFAULT_PORT: Final = 8883  # mqtt_protocol.cc: an endpoint without a port
MQTT_DEFAULT_KEEPALIVE_S: Final = 240
MQTT_HELLO_VERSION: Final = 3  # always 3 over MQTT (mqtt_protocol.cc GetHelloMessage)
UDP_HEADER: Final = struct.Struct(">BBHIII")  # type, flags, length, ssrc, timestamp, sequence


class Transport(StrEnum):
    """How the firmware reaches the server, chosen by each boot's OTA answer (§2.4)."""

    WEBSOCKET = "websocket"
    MQTT = "mqtt"


class DeviceState(StrEnum):
    """The firmware states a server can observe (protocol.md §1.3)."""

    IDLE = "idle"
    LISTENING = "listening"
    SPEAKING = "speaking"


def random_device_id() -> str:
    """Return a locally administered MAC, as the firmware formats its Device-Id."""
    octets = [0x02] + [random.randrange(256) for _ in range(5)]
    return ":".join(f"{o:02x}" for o in octets)


@dataclass(slots=True)
class Received:
    """Everything the server sent, with arrival times on the loop clock."""

    messages: list[tuple[float, JsonObject]] = field(default_factory=list)
    audio: list[tuple[float, bytes]] = field(default_factory=list)

    def of_type(self, kind: str, state: str | None = None) -> list[JsonObject]:
        """Return the messages of one type (and state)."""
        return [
            m
            for _, m in self.messages
            if m.get("type") == kind and (state is None or m.get("state") == state)
        ]


class DeviceEmulator:
    """One emulated device (or a third-party client that speaks the device protocol)."""

    def __init__(
        self,
        ota_url: str,
        *,
        device_id: str | None = None,
        client_id: str | None = None,
        board: str = BOARD,
        firmware_version: str = FIRMWARE_VERSION,
        language: str = "en-US",
        protocol_version: int | None = None,
        listen_mode: ListenMode = ListenMode.AUTO,
        frame_duration: int = DEVICE_FRAME_DURATION_MS,
        web_client: bool = False,
        relisten: bool = True,
        camera: bool = True,
        http: aiohttp.ClientSession | None = None,
    ) -> None:
        """Describe the device; `protocol_version` overrides what the OTA answer says.

        `listen_mode` is the device's default mode: auto (the firmware without AEC), realtime
        (with AEC: the microphone keeps streaming while the device speaks, and no new `listen
        start` follows a reply) or manual (push-to-talk). `frame_duration` is the length of the
        microphone's Opus frames, announced in the hello. A `web_client` connects as a browser
        does: identity and token in the URL's query, no custom headers. Without `relisten` the
        device goes idle after a reply in auto mode instead of sending a new `listen start`.
        Its MCP tools are in `mcp` (a `DeviceMcpServer`), with a camera unless `camera` is False.
        """
        if frame_duration not in FRAME_DURATIONS_MS:
            raise ValueError(f"frame_duration must be one of {FRAME_DURATIONS_MS}")
        self.ota_url = ota_url
        self.device_id = device_id or random_device_id()
        self.client_id = client_id or str(uuid.uuid4())
        self.board = board
        self.firmware_version = firmware_version
        self.language = language
        self.protocol_version = protocol_version
        self.default_listen_mode = listen_mode
        self.listen_mode = listen_mode
        self.frame_duration = frame_duration
        self.web_client = web_client
        self.relisten = relisten
        self.state = DeviceState.IDLE
        self._voice_processing = False  # the firmware's switch for sending microphone audio
        self.ota_answer: JsonObject | None = None
        self.websocket_settings: JsonObject = {}  # what the firmware keeps in NVS `websocket`
        self.mqtt_settings: JsonObject = {}  # ... and in NVS `mqtt`
        self.transport = Transport.WEBSOCKET
        self._mqtt: aiomqtt.Client | None = None
        self._mqtt_reader: asyncio.Task[None] | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._udp_key: algorithms.AES | None = None
        self._udp_nonce = b""
        self._local_sequence = 0
        self._remote_sequence = 0
        self.udp_dropped = 0  # reply datagrams the firmware would drop (bad length, old sequence)
        self._opening = False  # waiting for the server hello over MQTT
        self.server_hello_udp: JsonObject = {}  # the hello's `udp` block
        self._audio_tasks: set[asyncio.Task[None]] = set()
        self.server_hello: ServerHello | None = None
        self.received = Received()
        self.sent_messages: list[tuple[float, JsonObject]] = []  # the JSON this device sent
        self.close_code: int | None = None
        self._http = http
        self._own_http = http is None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._relisten_task: asyncio.Task[None] | None = None
        self._microphones: list[Microphone] = []
        self._playback_end = 0.0  # loop time at which the queued reply audio has played
        self._changed = asyncio.Condition()
        self._encoder = device_encoder(frame_duration)
        self.session_id = ""
        self.mcp = DeviceMcpServer(self.device_id, self.client_id, camera=camera)
        self._mcp_tasks: set[asyncio.Task[None]] = set()

    @property
    def speaking(self) -> bool:
        """Whether the device is in the `speaking` state."""
        return self.state is DeviceState.SPEAKING

    @property
    def mic_open(self) -> bool:
        """Whether the firmware would send microphone audio now (protocol.md §1.4, §3.5).

        From `listen start` on, while listening, and while speaking in realtime mode; in auto
        mode not again until the reply has played and a new `listen start` went out.
        """
        return self._voice_processing and not self.closed

    # --- boot: OTA check -------------------------------------------------------------------------

    def ota_headers(self) -> dict[str, str]:
        """Return the headers the firmware sends with its OTA check (protocol.md §2.2)."""
        return {
            "Activation-Version": "1",
            "Device-Id": self.device_id,
            "Client-Id": self.client_id,
            "User-Agent": f"{self.board}/{self.firmware_version}",
            "Accept-Language": self.language.lower(),
            "Content-Type": "application/json",
        }

    def system_info(self) -> JsonObject:
        """Return the system-info body the firmware posts."""
        return {
            "version": 2,
            "language": self.language,
            "flash_size": 16777216,
            "minimum_free_heap_size": "123456",
            "mac_address": self.device_id,
            "uuid": self.client_id,
            "chip_model_name": "esp32s3",
            "chip_info": {"model": 9, "cores": 2, "revision": 2, "features": 18},
            "application": {
                "name": "xiaozhi",
                "version": self.firmware_version,
                "compile_time": "Jul 18 2026T12:00:00Z",
                "idf_version": "v5.5.2",
                "elf_sha256": "0" * 64,
            },
            "partition_table": [
                {"label": "nvs", "type": 1, "subtype": 2, "address": 36864, "size": 16384}
            ],
            "ota": {"label": "ota_0"},
            "display": {"monochrome": False, "width": 240, "height": 240},
            "board": {
                "type": self.board,
                "name": self.board,
                "ssid": "emulated",
                "rssi": -50,
                "channel": 6,
                "ip": "127.0.0.1",
                "mac": self.device_id,
            },
        }

    async def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        return self._http

    async def check_ota(self) -> JsonObject:
        """POST the OTA endpoint like a booting device; keep the answer."""
        http = await self._session()
        async with http.post(
            self.ota_url, data=json.dumps(self.system_info()), headers=self.ota_headers()
        ) as response:
            response.raise_for_status()
            answer: JsonObject = await response.json()
        self.use_ota_answer(answer)
        return answer

    def use_ota_answer(self, answer: JsonObject) -> None:
        """Take an OTA answer as the firmware does: keep the `websocket` members (its NVS).

        They are kept whether or not the answer also asks for activation, and an answer without
        the block keeps the old ones.
        """
        self.ota_answer = answer
        for block, settings in (
            ("websocket", self.websocket_settings),
            ("mqtt", self.mqtt_settings),
        ):
            members = answer.get(block)
            if isinstance(members, dict):
                settings.update(
                    {
                        key: value
                        for key, value in members.items()
                        if isinstance(value, str | int) and not isinstance(value, bool)
                    }
                )
        # `mqtt` in this boot's answer wins; no block at all falls back to MQTT (NVS).
        if isinstance(answer.get("mqtt"), dict) or not isinstance(answer.get("websocket"), dict):
            self.transport = Transport.MQTT
        else:
            self.transport = Transport.WEBSOCKET

    @property
    def activation_code(self) -> str | None:
        """The code the device would speak and show, if the server asked for activation."""
        code = ((self.ota_answer or {}).get("activation") or {}).get("code")
        return code if isinstance(code, str) else None

    async def activate(self, *, timeout: float = 120.0, poll_s: float = ACTIVATION_POLL_S) -> None:
        """Poll the activate URL like the firmware until the server answers 200 (bound)."""
        url = self.ota_url if self.ota_url.endswith("/") else self.ota_url + "/"
        http = await self._session()
        async with asyncio.timeout(timeout):
            while True:
                async with http.post(
                    url + "activate", data="{}", headers=self.ota_headers()
                ) as response:
                    if response.status == 200:
                        return
                await asyncio.sleep(poll_s)

    # --- the audio channel -----------------------------------------------------------------------

    @property
    def binary_version(self) -> int:
        """The binary protocol version in use (OTA answer, unless overridden)."""
        if self.protocol_version is not None:
            return self.protocol_version
        if self.web_client:
            return 1  # a browser sends no Protocol-Version header
        version = self.websocket_settings.get("version")
        return version if isinstance(version, int) and version in (1, 2, 3) else 1

    @staticmethod
    def _bearer(token: str) -> str:
        return token if " " in token else f"Bearer {token}"

    def channel_headers(self, token: str) -> dict[str, str]:
        """Return the headers the firmware sends when it opens the WebSocket (none in a browser)."""
        if self.web_client:
            return {}
        headers = {
            "Protocol-Version": str(self.binary_version),
            "Device-Id": self.device_id,
            "Client-Id": self.client_id,
        }
        if token:
            headers["Authorization"] = self._bearer(token)
        return headers

    def channel_url(self, url: str, token: str) -> str:
        """Return the URL to open: as given, or with a browser client's query parameters.

        The names are those the reference server reads (`core/websocket_server.py`) and its web
        client sends (`digital-human/js/core/network/ota-connector.js`).
        """
        if not self.web_client:
            return url
        query = {"device-id": self.device_id, "client-id": self.client_id}
        if token:
            query["authorization"] = token if token.startswith("Bearer ") else f"Bearer {token}"
        return str(URL(url).update_query(query))

    async def connect(
        self, url: str | None = None, token: str | None = None, *, hello: bool = True
    ) -> ServerHello | None:
        """Open the channel (URL and token from the OTA answers by default) and say hello.

        Over MQTT: connect the MQTT client if it is not (the firmware does at boot), publish the
        hello, and open the UDP audio channel the server's hello describes.
        """
        if self.transport is Transport.MQTT:
            return await self._open_udp_channel(hello=hello)
        url = url or self.websocket_settings.get("url")
        if not isinstance(url, str) or not url:
            raise RuntimeError("no WebSocket URL: run check_ota() first or pass url")
        if token is None:
            stored = self.websocket_settings.get("token", "")
            token = stored if isinstance(stored, str) else ""
        http = await self._session()
        self._ws = await http.ws_connect(
            self.channel_url(url, token),
            headers=self.channel_headers(token),
            autoping=True,
            compress=0,
        )
        self.state = DeviceState.IDLE
        self._voice_processing = False
        self._reader = asyncio.get_running_loop().create_task(self._read(), name="emulator read")
        if not hello:
            return None
        await self.send_json(self.hello_message(token))
        message = await self.wait_for("hello", timeout=HELLO_TIMEOUT_S)
        self.server_hello = ServerHello.from_dict(message)
        self.session_id = self.server_hello.session_id
        return self.server_hello

    def client_hello(self) -> ClientHello:
        """Return the hello the firmware sends."""
        if self.transport is Transport.MQTT:
            return ClientHello(
                version=MQTT_HELLO_VERSION,
                transport="udp",
                features={"mcp": True},
                audio_params=AudioParams(frame_duration=self.frame_duration),
            )
        return ClientHello(
            version=self.binary_version,
            transport="websocket",
            features={"mcp": True, "glyph_push": False},
            audio_params=AudioParams(frame_duration=self.frame_duration),
        )

    def hello_message(self, token: str) -> JsonObject:
        """Return the first message: the firmware's hello, or the reference web client's.

        The web client (`digital-human/js/core/network/websocket.js`) sends no `version`,
        `transport` or `audio_params`, but its identity and token.
        """
        if not self.web_client:
            return self.client_hello().to_dict()
        return {
            "type": "hello",
            "device_id": self.device_id,
            "device_name": self.board,
            "device_mac": self.device_id,
            "token": token,
            "features": {"mcp": True},
        }

    async def _read(self) -> None:
        assert self._ws is not None
        loop = asyncio.get_running_loop()
        async for msg in self._ws:
            now = loop.time()
            if msg.type is aiohttp.WSMsgType.TEXT:
                await self._on_text(msg.data, now)
            elif msg.type is aiohttp.WSMsgType.BINARY:
                await self._on_audio(framing.unpack(self.binary_version, msg.data).payload, now)
        self.close_code = self._ws.close_code
        await self._channel_closed()

    async def _on_text(self, text: str, now: float) -> None:
        data = json.loads(text)
        parse_server_message(text)  # raises if the server broke the protocol
        self.received.messages.append((now, data))
        if data.get("type") == "mcp":
            await self._answer_mcp(data.get("payload"))
        elif data.get("type") == "tts":
            self._follow_tts(data.get("state"))
        async with self._changed:
            self._changed.notify_all()

    async def _on_audio(self, payload: bytes, now: float) -> None:
        self.received.audio.append((now, payload))
        if self.state is DeviceState.SPEAKING:
            self._play(now)
        async with self._changed:
            self._changed.notify_all()

    async def _channel_closed(self) -> None:
        self.state = DeviceState.IDLE
        self._voice_processing = False
        async with self._changed:
            self._changed.notify_all()

    def _play(self, now: float) -> None:
        """Queue one reply frame for the speaker (played back to back, in real time)."""
        duration = (
            self.server_hello.audio_params.frame_duration
            if self.server_hello
            else REPLY_FRAME_DURATION_MS
        )
        self._playback_end = max(now, self._playback_end) + duration / 1000

    def _follow_tts(self, state: object) -> None:
        """Move between the firmware's states on `tts start` and `tts stop` (protocol.md §4.2)."""
        if state == "start" and self.state in (DeviceState.IDLE, DeviceState.LISTENING):
            self.state = DeviceState.SPEAKING
            if self.listen_mode is not ListenMode.REALTIME:
                self._voice_processing = False
            self._playback_end = 0.0  # entering `speaking` flushes the decoder
        elif state == "stop" and self.state is DeviceState.SPEAKING:
            if self.listen_mode is ListenMode.REALTIME:
                self.state = DeviceState.LISTENING  # the microphone never stopped
            elif self.listen_mode is ListenMode.AUTO and self.relisten:
                self.state = DeviceState.LISTENING
                self._relisten_task = asyncio.get_running_loop().create_task(
                    self._listen_again(), name="emulator relisten"
                )
            else:
                self.state = DeviceState.IDLE
                self._voice_processing = False

    async def _listen_again(self) -> None:
        """Auto mode: once the reply has played, send a new `listen start` (application.cc)."""
        await asyncio.sleep(max(0.0, self._playback_end - asyncio.get_running_loop().time()))
        if self.state is DeviceState.LISTENING and not self.closed:
            await self._send_listen_start(ListenMode.AUTO)

    async def send_json(self, message: JsonObject) -> None:
        """Send one JSON message, with the session id as the firmware adds it."""
        if self.session_id and message.get("type") != "hello":
            message = {"session_id": self.session_id} | message
        self.sent_messages.append((asyncio.get_running_loop().time(), message))
        await self.send_text(json.dumps(message, ensure_ascii=False))

    async def send_text(self, text: str) -> None:
        """Send raw text (for malformed-input tests): a text frame, or a PUBLISH at QoS 0."""
        if self.transport is Transport.MQTT:
            if self._mqtt is None:
                raise ConnectionError("MQTT is not connected")
            await self._mqtt.publish(str(self.mqtt_settings.get("publish_topic", "")), text)
            return
        assert self._ws is not None
        await self._ws.send_str(text)

    async def send_binary(self, data: bytes) -> None:
        """Send a raw binary frame or UDP datagram (for malformed-input tests)."""
        if self.transport is Transport.MQTT:
            if self._udp is not None:
                self._udp.sendto(data)
            return
        assert self._ws is not None
        await self._ws.send_bytes(data)

    async def listen_start(self, mode: ListenMode | None = None) -> None:
        """Start listening in `mode` (the device's default mode if None)."""
        await self._send_listen_start(mode or self.default_listen_mode)

    async def _send_listen_start(self, mode: ListenMode) -> None:
        self.listen_mode = mode
        self.state = DeviceState.LISTENING
        self._voice_processing = True
        await self.send_json({"type": "listen", "state": ListenState.START, "mode": mode})

    async def listen_stop(self) -> None:
        """Stop listening (push-to-talk released): the device goes idle."""
        if self.state is DeviceState.LISTENING:
            self.state = DeviceState.IDLE
            self._voice_processing = False
        await self.send_json({"type": "listen", "state": ListenState.STOP})

    async def detect(self, wake_word: str) -> None:
        """Report the wake word."""
        await self.send_json({"type": "listen", "state": ListenState.DETECT, "text": wake_word})

    async def send_text_input(self, text: str) -> None:
        """Send typed text, as third-party clients do: `listen detect` with the text."""
        await self.send_json({"type": "listen", "state": ListenState.DETECT, "text": text})

    async def abort(self, reason: str | None = None) -> None:
        """Interrupt the reply."""
        await self.send_json({"type": "abort"} | ({"reason": reason} if reason else {}))

    async def send_packet(self, packet: bytes, timestamp: int = 0) -> None:
        """Send one Opus packet framed for the protocol version in use, or as a UDP datagram."""
        if self.transport is Transport.MQTT:
            if self._udp is not None:
                self._udp.sendto(self.seal(packet, timestamp))
            return
        await self.send_binary(framing.pack(self.binary_version, packet, timestamp))

    async def stream_pcm(self, pcm: bytes, *, realtime: bool = True) -> int:
        """Encode 16 kHz PCM into Opus frames and send them all, paced like a microphone.

        It sends whatever the device's state; `start_microphone()` is the firmware-like source.
        """
        loop = asyncio.get_running_loop()
        start = loop.time()
        count = 0
        for count, frame in enumerate(pcm_frames(pcm, self.frame_duration), start=1):
            await self.send_packet(self._encoder.encode(frame))
            if realtime:
                delay = start + count * self.frame_duration / 1000 - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
        return count

    def start_microphone(self, *, noise: float = 0.0, seed: int = 0) -> Microphone:
        """Open a microphone that streams until stopped: speech given to `say()`, else noise.

        It sends only while the firmware would (listening; speaking too in realtime mode).
        """
        microphone = Microphone(
            self.send_packet,
            lambda: self.mic_open,
            frame_duration_ms=self.frame_duration,
            noise=noise,
            seed=seed,
        )
        self._microphones.append(microphone)
        microphone.start()
        return microphone

    async def wait_for(
        self,
        kind: str,
        state: str | None = None,
        *,
        timeout: float = REPLY_TIMEOUT_S,
        after: int = 0,
    ) -> JsonObject:
        """Wait for a message of a type (and state), among those from index `after` on.

        Over MQTT messages arrive between sessions too: only a lost connection ends the wait.
        """
        async with asyncio.timeout(timeout), self._changed:
            while True:
                for _, message in self.received.messages[after:]:
                    if message.get("type") == kind and (
                        state is None or message.get("state") == state
                    ):
                        return message
                if self.closed and not self.mqtt_connected:
                    raise ConnectionError(f"channel closed ({self.close_code}) before '{kind}'")
                await self._changed.wait()

    async def wait_for_audio(self, count: int = 1, *, timeout: float = REPLY_TIMEOUT_S) -> None:
        """Wait until `count` reply audio frames have arrived."""
        async with asyncio.timeout(timeout), self._changed:
            while len(self.received.audio) < count:
                if self.closed:
                    raise ConnectionError(f"channel closed ({self.close_code}) before audio")
                await self._changed.wait()

    async def wait_closed(self, timeout: float = REPLY_TIMEOUT_S) -> int | None:
        """Wait until the server closes the channel; return the close code."""
        async with asyncio.timeout(timeout), self._changed:
            while not self.closed:
                await self._changed.wait()
        return self.close_code

    @property
    def can_send(self) -> bool:
        """Whether JSON can go to the server: over MQTT at any time, else on an open channel."""
        if self.transport is Transport.MQTT:
            return self._mqtt is not None
        return not self.closed

    @property
    def closed(self) -> bool:
        """Whether the audio channel is closed (over MQTT: no UDP channel open)."""
        if self.transport is Transport.MQTT:
            return self._udp is None and not self._opening
        return self._ws is None or self._ws.closed

    # --- MQTT + UDP (protocol.md §7) -------------------------------------------------------------

    @property
    def mqtt_connected(self) -> bool:
        """Whether the MQTT connection is up."""
        return self._mqtt is not None

    async def connect_mqtt(self) -> None:
        """Connect to the OTA answer's MQTT endpoint as the firmware does at boot.

        MQTT 3.1.1, a clean session, the stored keepalive; plain TCP unless the port is 8883
        (TLS, which this emulator does not speak). It never subscribes: whatever the server
        publishes to the connection arrives.
        """
        if self._mqtt is not None:
            return
        endpoint = str(self.mqtt_settings.get("endpoint", ""))
        if not endpoint:
            raise RuntimeError("no MQTT endpoint: run check_ota() first")
        host, _, port = endpoint.partition(":")
        port_number = int(port) if port else MQTT_DEFAULT_PORT
        if port_number == MQTT_DEFAULT_PORT:
            raise RuntimeError("port 8883 means TLS to the firmware")
        keepalive = self.mqtt_settings.get("keepalive", MQTT_DEFAULT_KEEPALIVE_S)
        client = aiomqtt.Client(
            host,
            port_number,
            identifier=str(self.mqtt_settings.get("client_id", "")),
            username=str(self.mqtt_settings.get("username", "")),
            password=str(self.mqtt_settings.get("password", "")),
            keepalive=keepalive if isinstance(keepalive, int) else MQTT_DEFAULT_KEEPALIVE_S,
            protocol=aiomqtt.ProtocolVersion.V311,
            clean_session=True,
            timeout=HELLO_TIMEOUT_S,
        )
        await client.__aenter__()
        self._mqtt = client
        self._mqtt_reader = asyncio.get_running_loop().create_task(
            self._read_mqtt(client), name="emulator mqtt"
        )

    async def _read_mqtt(self, client: aiomqtt.Client) -> None:
        loop = asyncio.get_running_loop()
        try:
            async for message in client.messages:
                payload = message.payload
                text = payload.decode() if isinstance(payload, bytes | bytearray) else str(payload)
                data = json.loads(text)
                if data.get("type") not in ("hello", "goodbye"):
                    await self._on_text(text, loop.time())
                    continue
                # Consumed by the transport (mqtt_protocol.cc:126): a goodbye counts only
                # with the current session id.
                self.received.messages.append((loop.time(), data))
                if data["type"] == "goodbye" and data.get("session_id") == self.session_id:
                    await self._close_udp(send_goodbye=False)
                async with self._changed:
                    self._changed.notify_all()
        except aiomqtt.MqttError:
            pass
        if self._mqtt is client:
            self._mqtt = None
        await self._close_udp(send_goodbye=False)

    async def disconnect_mqtt(self) -> None:
        """Close the MQTT connection (and the audio channel)."""
        await self._close_udp(send_goodbye=False)
        client, self._mqtt = self._mqtt, None
        if client is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await client.__aexit__(None, None, None)
        if self._mqtt_reader is not None:
            self._mqtt_reader.cancel()
            await asyncio.gather(self._mqtt_reader, return_exceptions=True)
            self._mqtt_reader = None

    async def _open_udp_channel(self, *, hello: bool) -> ServerHello | None:
        """`OpenAudioChannel` over MQTT: hello, wait for the server's, open the UDP socket."""
        await self.connect_mqtt()
        await self._close_udp(send_goodbye=False)
        self.session_id = ""
        self.state = DeviceState.IDLE
        self._voice_processing = False
        if not hello:
            return None
        after = len(self.received.messages)
        self._opening = True
        try:
            await self.send_json(self.client_hello().to_dict())
            message = await self.wait_for("hello", timeout=HELLO_TIMEOUT_S, after=after)
        finally:
            self._opening = False
        udp = message.get("udp")
        if message.get("transport") != "udp" or not isinstance(udp, dict):
            raise ConnectionError(f"server hello without a UDP channel: {message}")
        key, nonce = bytes.fromhex(udp["key"]), bytes.fromhex(udp["nonce"])
        if len(key) != 16 or len(nonce) != 16 or not 0 < udp["port"] < 65536:
            raise ConnectionError("server hello with a bad key, nonce or port")
        self.server_hello = ServerHello.from_dict(message)
        self.server_hello_udp = udp
        self.session_id = self.server_hello.session_id
        self._udp_key, self._udp_nonce = algorithms.AES(key), nonce
        self._local_sequence = self._remote_sequence = 0
        loop = asyncio.get_running_loop()
        self._udp, _ = await loop.create_datagram_endpoint(
            lambda: _UdpReceiver(self), remote_addr=(udp["server"], udp["port"])
        )
        return self.server_hello

    def seal(self, packet: bytes, timestamp: int = 0) -> bytes:
        """Encrypt one Opus packet as the firmware does (`SendAudio`, mqtt_protocol.cc:180)."""
        assert self._udp_key is not None
        self._local_sequence += 1
        header = bytearray(self._udp_nonce)
        struct.pack_into(">H", header, 2, len(packet))
        struct.pack_into(">II", header, 8, timestamp, self._local_sequence)
        encryptor = Cipher(self._udp_key, modes.CTR(bytes(header))).encryptor()
        return bytes(header) + encryptor.update(packet)

    def _datagram(self, data: bytes) -> None:
        """The firmware's UDP receive rules (mqtt_protocol.cc:267): drop, or decrypt and play."""
        if len(data) < UDP_HEADER.size or data[0] != 0x01 or self._udp_key is None:
            self.udp_dropped += 1
            return
        _, _, length, _, _, sequence = UDP_HEADER.unpack_from(data)
        if len(data) != UDP_HEADER.size + length or sequence <= self._remote_sequence:
            self.udp_dropped += 1
            return
        self._remote_sequence = sequence
        header = data[: UDP_HEADER.size]
        payload = Cipher(self._udp_key, modes.CTR(header)).decryptor().update(data[len(header) :])
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._on_audio(payload, loop.time()))
        self._audio_tasks.add(task)
        task.add_done_callback(self._audio_tasks.discard)

    async def close_audio_channel(self) -> None:
        """End the conversation as the device does: over MQTT drop UDP and say goodbye."""
        if self.transport is Transport.MQTT:
            await self._close_udp(send_goodbye=True)
        elif self._ws is not None:
            await self._ws.close()

    async def _close_udp(self, *, send_goodbye: bool) -> None:
        """`CloseAudioChannel` (mqtt_protocol.cc:214)."""
        udp, self._udp = self._udp, None
        if udp is None:
            return
        udp.close()
        if send_goodbye and self._mqtt is not None:
            await self.send_text(json.dumps({"session_id": self.session_id, "type": "goodbye"}))
        await self._channel_closed()

    # --- MCP: answer like the firmware's MCP server (tools/mcp_server.py) ----------------------

    async def _answer_mcp(self, payload: object) -> None:
        """Answer in a task of its own: a slow tool (the camera) must not stop the reader."""
        if not isinstance(payload, dict):
            return
        self.mcp.http = await self._session()

        async def answer() -> None:
            if (response := await self.mcp.handle(payload)) is None or not self.can_send:
                return
            # The connection may go while a tool runs: the firmware's publish just fails.
            with contextlib.suppress(aiomqtt.MqttError, ConnectionError):
                await self.send_json({"type": "mcp", "payload": response})

        task = asyncio.get_running_loop().create_task(answer(), name="emulator mcp")
        self._mcp_tasks.add(task)
        task.add_done_callback(self._mcp_tasks.discard)

    # --- reply audio -----------------------------------------------------------------------------

    @property
    def reply_sample_rate(self) -> int:
        """The rate the server announced for its audio."""
        return (
            self.server_hello.audio_params.sample_rate
            if self.server_hello
            else DEFAULT_REPLY_SAMPLE_RATE
        )

    def reply_pcm(self, start: int = 0) -> bytes:
        """Decode the reply audio received (from packet index `start`) at the announced rate."""
        decoder = OpusDecoder(self.reply_sample_rate)
        return b"".join(decoder.decode(packet) for _, packet in self.received.audio[start:])

    def save_reply(self, path: Path, start: int = 0) -> float:
        """Save the reply audio as a WAV file; return its length in seconds."""
        pcm = self.reply_pcm(start)
        write_wav(path, pcm, self.reply_sample_rate)
        return len(pcm) / SAMPLE_WIDTH / self.reply_sample_rate

    async def drop(self) -> None:
        """Vanish like a device that lost power or Wi-Fi: abort TCP, no close frame."""
        connection = self._ws._response.connection if self._ws is not None else None
        if connection is not None and connection.transport is not None:
            connection.transport.abort()
        await self.close()

    async def close(self) -> None:
        """Close the channel (and the MQTT connection) and free the client."""
        for microphone in self._microphones:
            await microphone.stop()
        if self._relisten_task is not None:
            self._relisten_task.cancel()
        for task in list(self._mcp_tasks):
            task.cancel()
        if self._ws is not None and not self._ws.closed:
            await self._ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        await self.disconnect_mqtt()
        if self._own_http and self._http is not None:
            await self._http.close()
            self._http = None


class _UdpReceiver(asyncio.DatagramProtocol):
    """The device's UDP socket, handing datagrams to its emulator."""

    def __init__(self, device: DeviceEmulator) -> None:
        self.device = device

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.device._datagram(data)
