"""The add-on's servers: the device endpoints on their own ports, and the link HA connects to."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
import json
import logging
import os
from pathlib import Path
import secrets
import time
from typing import Any, Final

import aiohttp
from aiohttp import web
from xiaozhi_core import ACTIVATE_PATH, OTA_PATH, WEBSOCKET_PATH, MqttUdpServer, XiaozhiServer
from xiaozhi_core.link import LINK_PATH, LINK_SERVICE, LINK_STATUS_PATH
from xiaozhi_core.offload import Offload
from xiaozhi_core.relay import RelayGate
from xiaozhi_core.worker import WorkerProcess

_LOGGER = logging.getLogger("xiaozhi_addon")

# OTA and WebSocket on the reference server's ports; always-connected devices on the integration's.
DEFAULT_PORTS: Final = {
    "http_port": 8003,
    "websocket_port": 8000,
    "mqtt_port": 8885,
    "udp_port": 8885,
}
SECRET_FILE: Final = "link_secret"
SUPERVISOR_URL: Final = "http://supervisor"
SUPERVISOR_TIMEOUT_S: Final = 10.0
# Refused credentials (a wrong token or link secret) from one address: after this many within
# the window, that address gets 429 for a while.
MAX_REFUSALS_PER_ADDRESS: Final = 10
REFUSAL_WINDOW_S: Final = 600.0
REFUSAL_BLOCK_S: Final = 600.0
MAX_TRACKED_ADDRESSES: Final = 4096  # addresses with recent refusals kept; the oldest go first
LOG_LEVELS: Final = ("debug", "info", "warning", "error")


@dataclass(frozen=True, slots=True)
class AddonOptions:
    """The add-on's options (the Supervisor writes them to /data/options.json)."""

    log_level: str
    link_secret: str
    secret_generated: bool = False

    @classmethod
    def load(cls, path: Path, data_dir: Path) -> AddonOptions:
        """Read the options; without a link secret, the one kept in `data_dir` (made once)."""
        options: dict[str, Any] = {}
        if path.is_file():
            options = json.loads(path.read_text(encoding="utf-8"))
        level = str(options.get("log_level") or "info").lower()
        if level not in LOG_LEVELS:
            level = "info"
        if secret := str(options.get("link_secret") or "").strip():
            return cls(level, secret)
        kept = data_dir / SECRET_FILE
        if kept.is_file() and (secret := kept.read_text(encoding="utf-8").strip()):
            return cls(level, secret)
        secret = secrets.token_urlsafe(32)
        data_dir.mkdir(parents=True, exist_ok=True)
        kept.touch(mode=0o600)
        kept.write_text(secret + "\n", encoding="utf-8")
        return cls(level, secret, secret_generated=True)


class RefusalLimiter:
    """Blocks an address that keeps presenting wrong credentials (guessing tokens)."""

    def __init__(self, time_source: Callable[[], float] = time.monotonic) -> None:
        """Start with no address blocked."""
        self._time = time_source
        self._refusals: dict[str, list[float]] = {}
        self._blocked_until: dict[str, float] = {}

    def blocked(self, address: str | None) -> bool:
        """Whether `address` is blocked now."""
        until = self._blocked_until.get(address or "")
        if until is None:
            return False
        if self._time() < until:
            return True
        del self._blocked_until[address or ""]
        return False

    def refused(self, address: str | None) -> None:
        """Count one refusal; the last one allowed blocks the address."""
        now = self._time()
        key = address or ""
        recent = [t for t in self._refusals.get(key, []) if now - t < REFUSAL_WINDOW_S]
        recent.append(now)
        self._refusals.pop(key, None)  # re-inserted last: the dict stays oldest first
        if len(recent) >= MAX_REFUSALS_PER_ADDRESS:
            _LOGGER.warning(
                "Blocking %s for %.0f s: %d refused attempts", key, REFUSAL_BLOCK_S, len(recent)
            )
            self._blocked_until[key] = now + REFUSAL_BLOCK_S
        else:
            self._refusals[key] = recent
        # Guesses from ever new addresses must not grow memory without bound.
        while len(self._refusals) > MAX_TRACKED_ADDRESSES:
            del self._refusals[next(iter(self._refusals))]
        if len(self._blocked_until) > MAX_TRACKED_ADDRESSES:
            self._blocked_until = {a: t for a, t in self._blocked_until.items() if t > now}
            while len(self._blocked_until) > MAX_TRACKED_ADDRESSES:
                del self._blocked_until[next(iter(self._blocked_until))]

    @web.middleware
    async def middleware(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        """Answer blocked addresses 429; count 401 and 403 answers."""
        if self.blocked(request.remote):
            return web.json_response({"error": "too many refused attempts"}, status=429)
        response = await handler(request)
        if response.status in (401, 403):
            self.refused(request.remote)
        return response


@web.middleware
async def _cors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Let web clients read the OTA and activation answers (the preflight is answered apart)."""
    response = await handler(request)
    if request.path.startswith(OTA_PATH.rstrip("/")) and (origin := request.headers.get("Origin")):
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"
    return response


class AddonHost:
    """Runs the device endpoints and the link for one Home Assistant."""

    def __init__(
        self,
        options: AddonOptions,
        *,
        listen_host: str | None = None,
        http_port: int = DEFAULT_PORTS["http_port"],
        websocket_port: int = DEFAULT_PORTS["websocket_port"],
        mqtt_port: int = DEFAULT_PORTS["mqtt_port"],
        udp_port: int = DEFAULT_PORTS["udp_port"],
        supervisor_url: str = SUPERVISOR_URL,
    ) -> None:
        """Serve on these ports (all addresses unless `listen_host`)."""
        self.options = options
        self.gate = RelayGate(options.link_secret)
        self.server = XiaozhiServer(self.gate, websocket_port=websocket_port)
        self.mqtt = MqttUdpServer(self.gate)
        self.limiter = RefusalLimiter()
        self._listen_host = listen_host
        self.http_port = http_port
        self.websocket_port = websocket_port
        self.mqtt_port = mqtt_port
        self.udp_port = udp_port
        self._supervisor_url = supervisor_url
        self._runners: list[web.AppRunner] = []
        # The devices' microphones are decoded and scored for voice in a process of their own.
        self.microphone_worker = WorkerProcess("microphone worker")
        self._worker_starting: asyncio.Future[None] | None = None

    def http_app(self) -> web.Application:
        """OTA, activation and the link (the port devices are pointed at, like 8003)."""
        app = web.Application(middlewares=[self.limiter.middleware, _cors])
        for path in (OTA_PATH, OTA_PATH.rstrip("/")):
            app.router.add_post(path, self.server.handle_ota)
            app.router.add_get(path, self.server.handle_ota)
            app.router.add_route("OPTIONS", path, self.server.handle_preflight)
        app.router.add_post(ACTIVATE_PATH, self.server.handle_activate)
        app.router.add_route("OPTIONS", ACTIVATE_PATH, self.server.handle_preflight)
        app.router.add_get(LINK_PATH, self.gate.handle_link)
        app.router.add_get(LINK_STATUS_PATH, self.gate.handle_status)
        return app

    def websocket_app(self) -> web.Application:
        """The devices' channels (like the reference server's 8000)."""
        app = web.Application(middlewares=[self.limiter.middleware])
        for path in (WEBSOCKET_PATH, WEBSOCKET_PATH.rstrip("/")):
            app.router.add_get(path, self.server.handle_websocket)
        return app

    async def start(self) -> None:
        """Open the ports and announce the add-on to Home Assistant."""
        loop = asyncio.get_running_loop()
        self.gate.microphones = Offload(loop, self.microphone_worker)
        # Started beside the ports' opening; a first batch would wait for it (`stop` too).
        self._worker_starting = loop.run_in_executor(None, self.microphone_worker.start)
        for app, port in (
            (self.http_app(), self.http_port),
            (self.websocket_app(), self.websocket_port),
        ):
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            await web.TCPSite(runner, self._listen_host, port).start()
            self._runners.append(runner)
        await self.mqtt.async_start(self._listen_host, self.mqtt_port, self.udp_port)
        self.mqtt_port, self.udp_port = self.mqtt.mqtt_port, self.mqtt.udp_port
        self.gate.mqtt_port = self.mqtt_port
        _LOGGER.info(
            "Serving devices: OTA http://<this host>:%d%s, WebSocket port %d, MQTT %d, UDP %d",
            self.http_port,
            OTA_PATH,
            self.websocket_port,
            self.mqtt_port,
            self.udp_port,
        )
        if self.options.secret_generated:  # once: at the first start, or after /data was reset
            _LOGGER.info(
                "Link secret (Home Assistant asks for it when linked by URL): %s",
                self.options.link_secret,
            )
        if token := os.environ.get("SUPERVISOR_TOKEN"):
            await self.announce(token)

    async def announce(self, token: str) -> None:
        """Tell the Supervisor how HA reaches this add-on (HA then offers to link to it)."""
        headers = {"Authorization": f"Bearer {token}"}
        timeout = aiohttp.ClientTimeout(total=SUPERVISOR_TIMEOUT_S)
        try:
            async with aiohttp.ClientSession(timeout=timeout, headers=headers) as http:
                async with http.get(f"{self._supervisor_url}/addons/self/info") as response:
                    response.raise_for_status()
                    hostname = (await response.json())["data"]["hostname"]
                config = {
                    "host": hostname,
                    "port": self.http_port,
                    "secret": self.options.link_secret,
                }
                async with http.post(
                    f"{self._supervisor_url}/discovery",
                    json={"service": LINK_SERVICE, "config": config},
                ) as response:
                    response.raise_for_status()
        except (aiohttp.ClientError, TimeoutError, KeyError, TypeError) as err:
            _LOGGER.error("Cannot announce the add-on to Home Assistant: %s", err)
            return
        _LOGGER.info("Announced to Home Assistant as %s:%d", hostname, self.http_port)

    async def stop(self) -> None:
        """Close every channel and connection, the link and the ports."""
        await self.mqtt.async_close()
        await self.server.close_all()
        await self.gate.close()
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()
        await asyncio.get_running_loop().run_in_executor(None, self.microphone_worker.close)
        if self._worker_starting is not None:
            await self._worker_starting  # done by now: `close` waited for it
