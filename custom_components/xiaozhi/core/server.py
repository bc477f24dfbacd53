"""aiohttp handlers for the OTA and WebSocket endpoints; a host mounts them on its own server."""

from __future__ import annotations

import asyncio
import json
import logging
import time

from aiohttp import WSMsgType, web
from yarl import URL

from . import framing
from .const import (
    BODY_READ_TIMEOUT_S,
    CLOSE_TIMEOUT_S,
    CORS_ALLOWED_HEADERS,
    CORS_ALLOWED_METHODS,
    CORS_MAX_AGE_S,
    DEFAULT_PROTOCOL_VERSION,
    MAX_CHANNELS_PER_ADDRESS,
    MAX_CONNECTIONS,
    MAX_OTA_BODY_BYTES,
    MAX_WEBSOCKET_FRAME_BYTES,
    QUERY_AUTHORIZATION,
    QUERY_CLIENT_ID,
    QUERY_DEVICE_ID,
    CloseCode,
)
from .errors import CheckInRefusedError, FramingError, OtaRequestError, ProtocolError
from .host import DeviceGate, SessionHandler
from .ota import MAX_HEADER_VALUE_CHARS, OtaRequest, build_ota_response, normalize_device_id
from .session import DeviceIdentity, DeviceSession, SessionState

_LOGGER = logging.getLogger(__name__)

MAX_CLOSE_REASON_BYTES = 123  # RFC 6455: a close frame's payload is at most 125 bytes


class WebSocketLink:
    """A `DeviceLink` over an aiohttp WebSocket, framing audio with the negotiated version."""

    def __init__(self, ws: web.WebSocketResponse, protocol_version: int) -> None:
        """Wrap a prepared WebSocket."""
        self._ws = ws
        self._version = protocol_version

    @property
    def closed(self) -> bool:
        """Whether the socket is closed or closing."""
        return self._ws.closed

    async def send_text(self, text: str) -> None:
        """Send one JSON message as a text frame."""
        await self._ws.send_str(text)

    async def send_audio(self, packet: bytes, timestamp: int) -> None:
        """Send one Opus packet as a binary frame."""
        await self._ws.send_bytes(framing.pack(self._version, packet, timestamp))

    async def close(self, code: CloseCode, reason: str) -> None:
        """Send a close frame with a short reason."""
        message = reason.encode()[:MAX_CLOSE_REASON_BYTES]
        await self._ws.close(code=code, message=message)


class XiaozhiServer:
    """Serves devices: answers OTA checks and runs a `DeviceSession` per WebSocket."""

    def __init__(self, gate: DeviceGate, *, websocket_port: int | None = None) -> None:
        """Serve the devices `gate` lets in.

        `websocket_port`: where the channel is served when not on the OTA endpoint's port.
        """
        self.gate = gate
        self.websocket_port = websocket_port
        self.sessions: set[DeviceSession] = set()
        self._by_device: dict[str, DeviceSession] = {}
        self._channels: dict[str, int] = {}  # device id -> its channel handlers running
        self._by_address: dict[str | None, int] = {}  # channel handlers running per address
        self._closing = False

    # --- OTA -------------------------------------------------------------------------------------

    async def handle_ota(self, request: web.Request) -> web.Response:
        """Answer a device's boot-time OTA check with the clock and its channel."""
        if self._closing:
            return _error(503, "server is shutting down")
        try:
            body = await _read_body(request, MAX_OTA_BODY_BYTES)
            ota_request = OtaRequest.from_http(request.headers, body, request.remote)
            answer_to = await self.gate.ota_answer(
                ota_request,
                default_websocket_url(request, self.gate.websocket_path, self.websocket_port),
            )
        except _BodyError as err:
            _LOGGER.warning("Rejected OTA request from %s: %s", request.remote, err)
            return _error(err.status, str(err))
        except OtaRequestError as err:
            _LOGGER.warning("Rejected OTA request from %s: %s", request.remote, err)
            return _error(400, str(err))
        except CheckInRefusedError as err:  # the gate logged why
            return _error(err.status, str(err))
        answer = build_ota_response(
            ota_request,
            answer_to,
            now_ms=time.time_ns() // 1_000_000,
            timezone_offset_minutes=self.gate.timezone_offset_minutes(),
        )
        _LOGGER.debug("OTA check from %s (%s)", ota_request.device_id, ota_request.user_agent)
        return web.json_response(answer)

    async def handle_activate(self, request: web.Request) -> web.Response:
        """Answer the firmware's activation poll: 200 once bound, 202 while waiting.

        The body (an HMAC from the chip's eFuse key, or `{}`) cannot be checked by anyone but
        the vendor, so it is read within limits and ignored: the user's code entry is the proof.
        """
        try:
            await _read_body(request, MAX_OTA_BODY_BYTES)
            device_id = normalize_device_id(request.headers.get("Device-Id"))
        except _BodyError as err:
            _LOGGER.warning("Rejected activation poll from %s: %s", request.remote, err)
            return _error(err.status, str(err))
        except OtaRequestError as err:
            _LOGGER.warning("Rejected activation poll from %s: %s", request.remote, err)
            return _error(400, str(err))
        client_id = _clip(request.headers.get("Client-Id"))
        if await self.gate.activation_done(device_id, client_id):
            return web.json_response({"status": "activated"})
        return web.json_response({"status": "waiting for the code"}, status=202)

    @staticmethod
    async def handle_preflight(request: web.Request) -> web.Response:
        """Answer a browser's CORS preflight for the OTA and activate endpoints."""
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Origin": request.headers.get("Origin") or "*",
                "Access-Control-Allow-Methods": CORS_ALLOWED_METHODS,
                "Access-Control-Allow-Headers": CORS_ALLOWED_HEADERS,
                "Access-Control-Max-Age": str(CORS_MAX_AGE_S),
                "Vary": "Origin",
            },
        )

    # --- WebSocket -------------------------------------------------------------------------------

    async def handle_websocket(self, request: web.Request) -> web.StreamResponse:
        """Run one device channel until either side closes it."""
        if self._closing:
            return _error(503, "server is shutting down")
        try:
            device, token = channel_credentials(request)
        except (OtaRequestError, FramingError) as err:
            _LOGGER.warning("Rejected connection from %s: %s", request.remote, err)
            return _error(400, str(err))
        handler = await self.gate.open_channel(device, token)
        if handler is None:
            _LOGGER.warning(
                "Refused device %s from %s: not authorized", device.device_id, request.remote
            )
            return _error(403, "device not authorized")
        if refusal := self._over_limits(device):
            _LOGGER.warning(
                "Refused device %s from %s: %s", device.device_id, device.remote, refusal
            )
            return _error(503, refusal)

        # Counted from here (no await since the check): concurrent handshakes see each other.
        self._channels[device.device_id] = self._channels.get(device.device_id, 0) + 1
        self._by_address[device.remote] = self._by_address.get(device.remote, 0) + 1
        try:
            return await self._serve(request, device, handler)
        finally:
            _decrement(self._channels, device.device_id)
            _decrement(self._by_address, device.remote)

    def _over_limits(self, device: DeviceIdentity) -> str | None:
        """Why a bound device may not open a channel now, if it may not.

        A device that has a channel (or is opening one) replaces it, so bound devices always
        get in while there are at most MAX_CONNECTIONS of them.
        """
        if self._by_address.get(device.remote, 0) >= MAX_CHANNELS_PER_ADDRESS:
            return f"more than {MAX_CHANNELS_PER_ADDRESS} channels from one address"
        if device.device_id not in self._channels and len(self._channels) >= MAX_CONNECTIONS:
            return f"{MAX_CONNECTIONS} devices connected"
        return None

    async def _serve(
        self, request: web.Request, device: DeviceIdentity, handler: SessionHandler
    ) -> web.WebSocketResponse:
        # No heartbeat: the session's idle timeout already drops silent (dead) devices.
        ws = web.WebSocketResponse(max_msg_size=MAX_WEBSOCKET_FRAME_BYTES, timeout=CLOSE_TIMEOUT_S)
        await ws.prepare(request)
        session = DeviceSession(
            WebSocketLink(ws, device.protocol_version),
            device,
            handler,
            microphone_offload=self.gate.microphones,
        )
        # One channel per device, race-free: the newest registers before anything awaits and
        # closes the one it replaces (the firmware opens a new channel when the old went stale).
        previous = self._by_device.get(device.device_id)
        self._by_device[device.device_id] = session
        self.sessions.add(session)
        session.start()
        try:
            if previous is not None:
                _LOGGER.info("%s replaces %s", session, previous)
                await previous.close(CloseCode.REPLACED, "replaced by a new connection")
            await self._receive(ws, session)
        except ProtocolError as err:
            _LOGGER.warning("Closing %s: %s", session, err)
            await session.close(err.close_code, str(err))
        except Exception:
            _LOGGER.exception("Unexpected error serving %s", session)
            await session.close(CloseCode.INTERNAL_ERROR, "internal error")
        finally:
            session.finish()
            self.sessions.discard(session)
            if self._by_device.get(device.device_id) is session:
                del self._by_device[device.device_id]
        return ws

    async def _receive(self, ws: web.WebSocketResponse, session: DeviceSession) -> None:
        version = session.device.protocol_version
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                await session.handle_text(msg.data)
            elif msg.type is WSMsgType.BINARY:
                if not session.ready:
                    raise ProtocolError("audio before hello")
                session.handle_audio(framing.unpack(version, msg.data).payload)
            elif msg.type is WSMsgType.ERROR:
                _LOGGER.warning("Closing %s: %s", session, ws.exception())
                return

    async def close_all(self, code: CloseCode = CloseCode.GOING_AWAY) -> None:
        """Close every device channel (hub unloading) and wait for their handlers to end."""
        self._closing = True
        sessions = list(self.sessions)
        await asyncio.gather(
            *(s.close(code, "server unloading") for s in sessions), return_exceptions=True
        )
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await asyncio.gather(*(s.wait_closed() for s in sessions))
        except TimeoutError:
            open_sessions = [s for s in sessions if s.state is not SessionState.CLOSED]
            _LOGGER.warning("%d device channels did not close in time", len(open_sessions))
            for session in open_sessions:
                session.finish()


class _BodyError(Exception):
    """A request body over its size limit (413) or too slow to arrive (408)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def _read_body(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise _BodyError(413, f"body exceeds {limit} bytes")
    body = bytearray()
    try:
        async with asyncio.timeout(BODY_READ_TIMEOUT_S):
            async for chunk in request.content.iter_any():
                body += chunk
                if len(body) > limit:
                    raise _BodyError(413, f"body exceeds {limit} bytes")
    except TimeoutError:
        raise _BodyError(408, f"body not sent within {BODY_READ_TIMEOUT_S:g} s") from None
    return bytes(body)


def _decrement[K](counts: dict[K, int], key: K) -> None:
    if counts[key] <= 1:
        del counts[key]
    else:
        counts[key] -= 1


def _clip(value: str | None) -> str | None:
    return (value or "").strip()[:MAX_HEADER_VALUE_CHARS] or None


def _error(status: int, message: str) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps({"error": message}, ensure_ascii=False),
        content_type="application/json",
    )


def channel_credentials(request: web.Request) -> tuple[DeviceIdentity, str | None]:
    """Read who is connecting, and their token, from the firmware's headers (protocol.md §3.1).

    Web clients cannot set WebSocket headers and send query parameters instead (the reference
    server's names); a header wins over its query parameter.
    """
    headers, query = request.headers, request.query
    raw_version = headers.get("Protocol-Version", str(DEFAULT_PROTOCOL_VERSION))
    try:
        version = int(raw_version)
    except ValueError:
        raise FramingError(f"Protocol-Version {raw_version[:16]!r} is not a number") from None
    identity = DeviceIdentity(
        device_id=normalize_device_id(headers.get("Device-Id") or query.get(QUERY_DEVICE_ID)),
        client_id=_clip(headers.get("Client-Id") or query.get(QUERY_CLIENT_ID)),
        protocol_version=framing.check_version(version),
        remote=request.remote,
    )
    return identity, bearer_token(headers.get("Authorization") or query.get(QUERY_AUTHORIZATION))


def bearer_token(value: str | None) -> str | None:
    """Return the token from an `Authorization` value (the firmware adds `Bearer ` to tokens)."""
    value = (value or "").strip()
    if value[:7].lower() == "bearer ":
        value = value[7:].strip()
    return value or None


def default_websocket_url(request: web.Request, path: str, port: int | None = None) -> str:
    """Return the channel URL on the host the device just reached, and its port (or `port`)."""
    scheme = "wss" if request.secure else "ws"
    if port is None:
        return f"{scheme}://{request.host}{path}"
    return str(
        URL.build(scheme=scheme, host=URL(f"//{request.host}").host or "", port=port, path=path)
    )
