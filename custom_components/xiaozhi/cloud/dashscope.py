"""The DashScope (Alibaba Cloud Bailian) duplex task protocol over WebSocket.

One task per connection: the client sends `run-task` and waits for `task-started`, then streams
`continue-task` text or binary audio frames, and ends with `finish-task`. The service answers with
`result-generated` events and binary audio frames, and ends with `task-finished` or `task-failed`
(whose header carries `error_code` and `error_message`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
import json
import logging
from typing import Any, Final
import uuid

import aiohttp

from .errors import SpeechAuthError, SpeechRejectedError, SpeechServiceError

_LOGGER = logging.getLogger(__name__)

DEFAULT_URL: Final = "wss://dashscope.aliyuncs.com/api-ws/v1/inference"
INTL_URL: Final = "wss://dashscope-intl.aliyuncs.com/api-ws/v1/inference"  # international accounts
REGION_MAINLAND: Final = "mainland"
REGION_INTERNATIONAL: Final = "international"
REGION_CUSTOM: Final = "custom"  # another endpoint (a proxy, a new region): its URL as given
# An account belongs to one region, and its key works only on that region's endpoint.
REGION_URLS: Final = {REGION_MAINLAND: DEFAULT_URL, REGION_INTERNATIONAL: INTL_URL}
URL_SCHEMES: Final = ("ws", "wss")
# Error codes of task-failed that mean the key, not the request, is wrong.
_AUTH_ERROR_CODES: Final = frozenset({"InvalidApiKey", "AccessDenied", "Unauthorized"})
MAX_EVENT_BYTES: Final = 4 * 1024 * 1024  # the largest frame accepted from the service
CLOSE_TIMEOUT_S: Final = 2.0

ACTION_RUN: Final = "run-task"
ACTION_CONTINUE: Final = "continue-task"
ACTION_FINISH: Final = "finish-task"
EVENT_STARTED: Final = "task-started"
EVENT_RESULT: Final = "result-generated"
EVENT_FINISHED: Final = "task-finished"
EVENT_FAILED: Final = "task-failed"
STREAMING_DUPLEX: Final = "duplex"
_AUTH_STATUSES: Final = frozenset({401, 403})

type Payload = dict[str, Any]


def region_of(url: str | None) -> str:
    """The region whose endpoint a URL is: mainland without one, custom for any other URL."""
    if url is None:
        return REGION_MAINLAND
    return next((region for region, known in REGION_URLS.items() if known == url), REGION_CUSTOM)


class DashScopeTask:
    """One running task: send audio or text in, read results and audio out."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, task_id: str, timeout: float) -> None:
        """Wrap a connection whose task has started."""
        self.task_id = task_id
        self._ws = ws
        self._timeout = timeout
        self._finish_sent = False
        self._receive_deadline: asyncio.Timeout | None = None

    @classmethod
    async def start(
        cls,
        session: aiohttp.ClientSession,
        *,
        url: str,
        api_key: str,
        payload: Payload,
        timeout: float,
    ) -> DashScopeTask:
        """Connect, send run-task and wait for task-started; raise SpeechServiceError if not."""
        task_id = uuid.uuid4().hex
        try:
            async with asyncio.timeout(timeout):
                ws = await session.ws_connect(
                    url,
                    headers={"Authorization": f"Bearer {api_key}"},
                    max_msg_size=MAX_EVENT_BYTES,
                    timeout=aiohttp.ClientWSTimeout(ws_close=CLOSE_TIMEOUT_S),
                )
        except aiohttp.WSServerHandshakeError as err:
            if err.status in _AUTH_STATUSES:
                raise SpeechAuthError(f"DashScope refused the API key ({err.status})") from err
            raise SpeechServiceError(f"DashScope refused the connection ({err.status})") from err
        except TimeoutError as err:
            raise SpeechServiceError(f"DashScope did not answer within {timeout:g} s") from err
        except (aiohttp.ClientError, OSError) as err:
            raise SpeechServiceError(f"Cannot reach DashScope: {err}") from err
        task = cls(ws, task_id, timeout)
        try:
            await task._send(ACTION_RUN, payload)
            async with asyncio.timeout(timeout):
                async for _ in task._events(until=EVENT_STARTED):
                    pass
        except TimeoutError as err:
            await task.close()
            raise SpeechServiceError(f"DashScope did not start the task in {timeout:g} s") from err
        except BaseException:
            await task.close()
            raise
        return task

    async def send_audio(self, audio: bytes) -> None:
        """Send one binary audio frame."""
        try:
            await self._ws.send_bytes(audio)
        except (aiohttp.ClientError, ConnectionError) as err:
            raise SpeechServiceError(f"Lost the connection to DashScope: {err}") from err

    async def send_text(self, text: str) -> None:
        """Send a piece of text (continue-task)."""
        await self._send(ACTION_CONTINUE, {"input": {"text": text}})

    async def finish(self) -> None:
        """Say that all input has been sent; from now on the service has `timeout` to answer."""
        await self._send(ACTION_FINISH, {"input": {}})
        self._finish_sent = True
        if self._receive_deadline is not None:
            self._receive_deadline.reschedule(asyncio.get_running_loop().time() + self._timeout)

    def results(self) -> AsyncIterator[Payload | bytes]:
        """Yield result payloads and binary audio until task-finished; raise on task-failed."""
        return self._events(until=EVENT_FINISHED)

    async def close(self) -> None:
        """Close the connection (the service ends the task with it)."""
        await self._ws.close()

    async def _send(self, action: str, payload: Payload) -> None:
        header = {"action": action, "task_id": self.task_id, "streaming": STREAMING_DUPLEX}
        try:
            await self._ws.send_str(json.dumps({"header": header, "payload": payload}))
        except (aiohttp.ClientError, ConnectionError) as err:
            raise SpeechServiceError(f"Lost the connection to DashScope: {err}") from err

    async def _receive(self) -> aiohttp.WSMessage:
        """Wait for the next frame: without limit while input flows, `timeout` once finished."""
        try:
            async with asyncio.timeout(self._timeout if self._finish_sent else None) as deadline:
                self._receive_deadline = deadline
                return await self._ws.receive()
        except TimeoutError as err:
            raise SpeechServiceError(
                f"DashScope did not finish within {self._timeout:g} s"
            ) from err
        finally:
            self._receive_deadline = None

    async def _events(self, *, until: str) -> AsyncIterator[Payload | bytes]:
        while True:
            message = await self._receive()
            if message.type is aiohttp.WSMsgType.BINARY:
                yield message.data
                continue
            if message.type is not aiohttp.WSMsgType.TEXT:
                raise SpeechServiceError("DashScope closed the connection before the task ended")
            try:
                event = json.loads(message.data)
                header = event["header"]
                name = header["event"]
            except (ValueError, KeyError, TypeError) as err:
                raise SpeechServiceError("DashScope sent an event that is not JSON") from err
            if name == EVENT_FAILED:
                code = header.get("error_code", "unknown")
                detail = f"DashScope task failed: {code}: {header.get('error_message', '')}"
                if code in _AUTH_ERROR_CODES:
                    raise SpeechAuthError(detail)
                raise SpeechRejectedError(detail)
            if name == EVENT_RESULT:
                yield event.get("payload") or {}
            if name == until:
                return
            if name not in (EVENT_STARTED, EVENT_RESULT):
                _LOGGER.debug("Ignoring DashScope event %s", name)


class DashScopeModel:
    """A DashScope model used through one task per request on the inference WebSocket."""

    default_model: str

    def __init__(
        self,
        session: aiohttp.ClientSession,
        api_key: str,
        *,
        url: str = DEFAULT_URL,
        model: str | None = None,
        timeout: float,
    ) -> None:
        """Set the service up; nothing is sent until a task starts."""
        self._session = session
        self._api_key = api_key
        self._url = url
        self._model = model or self.default_model
        self._timeout = timeout

    async def _check_task(self, task: str, function: str, parameters: Payload) -> None:
        """Start a task and close it unused: checks the URL, the key and the model."""
        started = await self._start_task(task, function, parameters)
        await started.close()

    async def _start_task(self, task: str, function: str, parameters: Payload) -> DashScopeTask:
        """Start an audio task with this model; connection and auth errors raise here."""
        return await DashScopeTask.start(
            self._session,
            url=self._url,
            api_key=self._api_key,
            payload={
                "task_group": "audio",
                "task": task,
                "function": function,
                "model": self._model,
                "parameters": parameters,
                "input": {},
            },
            timeout=self._timeout,
        )
