"""Loopback stand-ins for the cloud speech services, speaking their real wire protocols.

- `DashScopeServer`: the DashScope duplex task protocol (run-task / continue-task / finish-task,
  task-started / result-generated / task-finished / task-failed, binary audio) for Paraformer
  realtime ASR and CosyVoice TTS. It checks the auth header and every command's shape.
- `EdgeServer`: the Edge read-aloud voice list and its WebSocket exchange (speech.config, SSML,
  turn.start, binary audio frames with their header, turn.end), so edge-tts runs unchanged.
- `OpenAiServer`: `POST /v1/audio/transcriptions` (multipart, like OpenAI's).
- `BlackHole`: accepts TCP connections and never answers; `closed_port()` refuses them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
import json
import re
import socket
import subprocess
from typing import Any
from xml.sax.saxutils import unescape

from aiohttp import WSMsgType, web

from .audio import tone

HOST = "127.0.0.1"
DASHSCOPE_KEY = "sk-test-dashscope"
OPENAI_KEY = "sk-test-openai"
ASR_SAMPLE_RATE = 16000
ASR_PARTIAL_EVERY_BYTES = ASR_SAMPLE_RATE * 2 * 3 // 10  # an interim result per 300 ms heard
TTS_SAMPLE_RATE = 24000
TTS_BYTES_PER_CHAR = TTS_SAMPLE_RATE * 2 // 20  # 50 ms of speech per character
TTS_FRAME_BYTES = 4800  # audio is sent in frames of 100 ms
EDGE_CLIP_S = 0.25  # the MP3 clip the Edge stand-in repeats
EDGE_SECONDS_PER_CHAR = 0.2  # a Chinese character takes about this long to say


async def _start(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0)
    await site.start()
    port: int = runner.addresses[0][1]
    return runner, port


def _event(task_id: str, name: str, payload: dict[str, Any] | None = None, **header: Any) -> str:
    return json.dumps(
        {
            "header": {"task_id": task_id, "event": name, "attributes": {}, **header},
            "payload": payload if payload is not None else {},
        }
    )


@dataclass
class DashScopeServer:
    """Paraformer realtime ASR and CosyVoice TTS over one loopback endpoint."""

    sentences: list[str] = field(default_factory=lambda: ["打开客厅的灯。", "谢谢。"])
    fail_task: tuple[str, str] | None = None  # (code, message) answered to run-task
    fail_after_audio: tuple[str, str] | None = None  # ASR fails once audio has arrived
    stall_after_finish: bool = False  # never sends task-finished
    # What happened, in order: ("run-task", payload) / ("audio", n) / ("continue-task", text) /
    # ("finish-task", None), and the errors found in what the client sent.
    log: list[tuple[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    audio_seen: asyncio.Event = field(default_factory=asyncio.Event)
    connections: int = 0
    url: str = ""
    _runner: web.AppRunner | None = None

    async def start(self) -> DashScopeServer:
        """Listen on an ephemeral loopback port."""
        app = web.Application()
        app.router.add_get("/api-ws/v1/inference", self._handle)
        self._runner, port = await _start(app)
        self.url = f"ws://{HOST}:{port}/api-ws/v1/inference"
        return self

    async def close(self) -> None:
        """Stop listening and close open connections."""
        if self._runner is not None:
            await self._runner.cleanup()

    def kinds(self) -> list[str]:
        """The kinds of message received, in order (runs of audio frames collapsed)."""
        kinds: list[str] = []
        for kind, _ in self.log:
            if not (kind == "audio" and kinds and kinds[-1] == "audio"):
                kinds.append(kind)
        return kinds

    def texts(self) -> list[str]:
        """The text pieces received with continue-task."""
        return [value for kind, value in self.log if kind == "continue-task"]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.connections += 1
        if request.headers.get("Authorization", "").lower() != f"bearer {DASHSCOPE_KEY}":
            raise web.HTTPUnauthorized(text="Invalid API-key provided.")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        task_id = ""
        task = ""
        heard = 0
        partials_sent = 0
        async for message in ws:
            if message.type is WSMsgType.BINARY:
                self.log.append(("audio", len(message.data)))
                self.audio_seen.set()
                if task != "asr":
                    self.errors.append("audio sent to a task that is not ASR")
                heard += len(message.data)
                if self.fail_after_audio is not None:
                    code, text = self.fail_after_audio
                    await ws.send_str(
                        _event(task_id, "task-failed", error_code=code, error_message=text)
                    )
                    break
                if heard // ASR_PARTIAL_EVERY_BYTES > partials_sent:
                    partials_sent += 1
                    await ws.send_str(self._asr_result(task_id, partials_sent, final=False))
                continue
            if message.type is not WSMsgType.TEXT:
                break
            command = json.loads(message.data)
            header = command.get("header", {})
            action = header.get("action")
            payload = command.get("payload", {})
            if header.get("streaming") != "duplex":
                self.errors.append(f"{action} without streaming=duplex")
            if action == "run-task":
                task_id = header.get("task_id", "")
                task = payload.get("task", "")
                self.log.append(("run-task", payload))
                if problem := self._check_run_task(payload):
                    self.errors.append(problem)
                    await ws.send_str(
                        _event(task_id, "task-failed", error_code="InvalidParameter",
                               error_message=problem)
                    )  # fmt: skip
                    break
                if self.fail_task is not None:
                    code, text = self.fail_task
                    await ws.send_str(
                        _event(task_id, "task-failed", error_code=code, error_message=text)
                    )
                    break
                await ws.send_str(_event(task_id, "task-started"))
                continue
            if header.get("task_id") != task_id:
                self.errors.append(f"{action} for task {header.get('task_id')}, not {task_id}")
            if action == "continue-task":
                text = payload.get("input", {}).get("text", "")
                self.log.append(("continue-task", text))
                await self._speak(ws, task_id, text)
            elif action == "finish-task":
                self.log.append(("finish-task", None))
                if task == "asr" and not heard:
                    await ws.send_str(
                        _event(task_id, "task-failed", error_code="NO_VALID_AUDIO_ERROR",
                               error_message="no audio before finish-task")
                    )  # fmt: skip
                    break
                if self.stall_after_finish:
                    continue
                if task == "asr":
                    for index in range(len(self.sentences)):
                        await ws.send_str(self._asr_result(task_id, index, final=True))
                await ws.send_str(_event(task_id, "task-finished"))
            else:
                self.errors.append(f"unknown action {action!r}")
        await ws.close()
        return ws

    def _check_run_task(self, payload: dict[str, Any]) -> str | None:
        parameters = payload.get("parameters", {})
        if payload.get("task_group") != "audio" or payload.get("input") != {}:
            return f"bad run-task payload: {payload}"
        if payload.get("task") == "asr":
            ok = (
                payload.get("function") == "recognition"
                and parameters.get("format") == "pcm"
                and parameters.get("sample_rate") == ASR_SAMPLE_RATE
            )
        elif payload.get("task") == "tts":
            ok = (
                payload.get("function") == "SpeechSynthesizer"
                and parameters.get("format") == "pcm"
                and parameters.get("sample_rate") == TTS_SAMPLE_RATE
                and parameters.get("text_type") == "PlainText"
                and bool(parameters.get("voice"))
            )
        else:
            ok = False
        return None if ok and payload.get("model") else f"bad run-task: {payload}"

    def _asr_result(self, task_id: str, index: int, *, final: bool) -> str:
        if final:
            sentence = {"text": self.sentences[index], "sentence_end": True, "end_time": 1000}
        else:  # an interim guess: the first sentence heard so far
            first = self.sentences[0]
            sentence = {"text": first[: min(index, len(first))], "sentence_end": False}
        sentence |= {"begin_time": 0, "heartbeat": False, "words": []}
        return _event(task_id, "result-generated", {"output": {"sentence": sentence}})

    async def _speak(self, ws: web.WebSocketResponse, task_id: str, text: str) -> None:
        if not text:
            return
        await ws.send_str(
            _event(task_id, "result-generated",
                   {"output": {"type": "sentence-begin", "original_text": text}})
        )  # fmt: skip
        audio = tone(len(text) * TTS_BYTES_PER_CHAR / 2 / TTS_SAMPLE_RATE, TTS_SAMPLE_RATE)
        for start in range(0, len(audio), TTS_FRAME_BYTES):
            await ws.send_str(
                _event(task_id, "result-generated", {"output": {"type": "sentence-synthesis"}})
            )
            await ws.send_bytes(audio[start : start + TTS_FRAME_BYTES])


# --- Edge read-aloud -------------------------------------------------------------------------

EDGE_VOICES = [
    {"ShortName": "zh-CN-XiaoxiaoNeural", "Locale": "zh-CN", "Gender": "Female"},
    {"ShortName": "zh-CN-YunxiNeural", "Locale": "zh-CN", "Gender": "Male"},
    {"ShortName": "en-US-EmmaMultilingualNeural", "Locale": "en-US", "Gender": "Female"},
    {"ShortName": "ja-JP-NanamiNeural", "Locale": "ja-JP", "Gender": "Female"},
]
_SSML = re.compile(
    r"<voice name='(?P<voice>[^']+)'><prosody pitch='(?P<pitch>[^']+)' rate='(?P<rate>[^']+)' "
    r"volume='(?P<volume>[^']+)'>(?P<text>.*)</prosody></voice>",
    re.DOTALL,
)


def mp3_clip(seconds: float = EDGE_CLIP_S) -> bytes:
    """MP3 as Edge sends it (24 kHz mono 48 kbit/s, bare frames), encoded by ffmpeg."""
    return subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
         f"sine=frequency=440:duration={seconds}", "-ar", "24000", "-ac", "1", "-b:a", "48k",
         "-write_xing", "0", "-id3v2_version", "0", "-f", "mp3", "pipe:1"],
        check=True, capture_output=True, timeout=30,
    ).stdout  # fmt: skip


@dataclass
class EdgeServer:
    """The Edge read-aloud service: voice list and the synthesis WebSocket."""

    mp3: bytes
    stall: bool = False  # accept the WebSocket, then never answer
    ssml: list[dict[str, str]] = field(default_factory=list)  # voice, rate, pitch, volume, text
    queries: list[dict[str, str]] = field(default_factory=list)
    voice_list_requests: int = 0
    errors: list[str] = field(default_factory=list)
    wss_url: str = ""
    voices_url: str = ""
    _runner: web.AppRunner | None = None

    async def start(self) -> EdgeServer:
        """Listen on an ephemeral loopback port."""
        app = web.Application()
        app.router.add_get("/edge/v1", self._synthesize)
        app.router.add_get("/voices/list", self._voices)
        self._runner, port = await _start(app)
        base = f"{HOST}:{port}"
        self.wss_url = f"ws://{base}/edge/v1?TrustedClientToken=test-token"
        self.voices_url = f"http://{base}/voices/list?trustedclienttoken=test-token"
        return self

    async def close(self) -> None:
        """Stop listening and close open connections."""
        if self._runner is not None:
            await self._runner.cleanup()

    @staticmethod
    def clips_for(chars: int) -> int:
        """How many clips the answer to a text of this length holds (longer text, longer)."""
        return max(1, round(chars * EDGE_SECONDS_PER_CHAR / EDGE_CLIP_S))

    def audio_for(self, texts: list[str]) -> bytes:
        """The MP3 this server sends for these texts."""
        return b"".join(self.mp3 * self.clips_for(len(text)) for text in texts)

    async def _voices(self, request: web.Request) -> web.Response:
        self.voice_list_requests += 1
        if "Sec-MS-GEC" not in request.query:
            self.errors.append("voice list without Sec-MS-GEC")
        return web.json_response(EDGE_VOICES)

    async def _synthesize(self, request: web.Request) -> web.StreamResponse:
        self.queries.append(dict(request.query))
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            if message.type is not WSMsgType.TEXT:
                break
            if self.stall:
                continue
            head, _, body = message.data.partition("\r\n\r\n")
            if "Path:speech.config" in head:
                if "audio-24khz-48kbitrate-mono-mp3" not in body:
                    self.errors.append(f"unexpected speech.config {body}")
                continue
            if "Path:ssml" not in head:
                self.errors.append(f"unexpected message {head!r}")
                continue
            if (match := _SSML.search(body)) is None:
                self.errors.append(f"unexpected SSML {body!r}")
                break
            request_ssml = {k: unescape(v) for k, v in match.groupdict().items()}
            self.ssml.append(request_ssml)
            await self._answer(ws, len(request_ssml["text"]))
            break
        await ws.close()
        return ws

    async def _answer(self, ws: web.WebSocketResponse, chars: int) -> None:
        await ws.send_str(
            "X-RequestId:test\r\nContent-Type:application/json; charset=utf-8\r\n"
            'Path:turn.start\r\n\r\n{"context":{"serviceTag":"test"}}'
        )
        header = b"X-RequestId:test\r\nContent-Type:audio/mpeg\r\nPath:audio\r\n"
        clip = self.mp3 * self.clips_for(chars)
        half = len(clip) // 2
        for part in (clip[:half], clip[half:]):
            await ws.send_bytes(len(header).to_bytes(2, "big") + header + part)
        await ws.send_str("X-RequestId:test\r\nPath:turn.end\r\n\r\n{}")


# --- OpenAI-compatible transcriptions ---------------------------------------------------------


@dataclass
class OpenAiServer:
    """`POST /v1/audio/transcriptions` answering a set transcript."""

    transcript: str = "打开客厅的灯"
    status: int = 200
    stall: bool = False
    requests: list[dict[str, Any]] = field(default_factory=list)
    base_url: str = ""
    _runner: web.AppRunner | None = None
    _release: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> OpenAiServer:
        """Listen on an ephemeral loopback port."""
        app = web.Application()
        app.router.add_post("/v1/audio/transcriptions", self._transcribe)
        self._runner, port = await _start(app)
        self.base_url = f"http://{HOST}:{port}/v1"
        return self

    async def close(self) -> None:
        """Stop listening (a stalled request is released first)."""
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _transcribe(self, request: web.Request) -> web.Response:
        fields: dict[str, Any] = {"authorization": request.headers.get("Authorization")}
        async for part in await request.multipart():
            if part.name == "file":
                fields["filename"] = part.filename
                fields["file"] = await part.read()
            elif part.name:
                fields[part.name] = await part.text()
        self.requests.append(fields)
        if self.stall:
            await self._release.wait()
        if fields["authorization"] != f"Bearer {OPENAI_KEY}":
            return web.json_response(
                {"error": {"message": "Incorrect API key", "type": "invalid_request_error"}},
                status=401,
            )
        if self.status != 200:
            return web.json_response({"error": {"message": "overloaded"}}, status=self.status)
        return web.json_response({"text": self.transcript})


# --- Unreachable services ---------------------------------------------------------------------


class BlackHole:
    """Accepts TCP connections and never answers (a service that hangs)."""

    def __init__(self) -> None:
        """Not listening yet."""
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self.port = 0

    async def start(self) -> BlackHole:
        """Listen on an ephemeral loopback port."""

        async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self._writers.append(writer)

        self._server = await asyncio.start_server(hold, HOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        """Drop every held connection and stop listening."""
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
    return port
