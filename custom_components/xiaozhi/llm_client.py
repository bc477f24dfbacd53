"""OpenAI-compatible chat completions, streamed: no Home Assistant in here.

Turns a streamed chat completion into text, reasoning and complete tool calls, and every way
the service can fail into one of a few error kinds a user can act on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
import json
from typing import Any, Final

import openai
from openai.types.chat import (
    ChatCompletionChunk,
    ChatCompletionFunctionToolParam,
    ChatCompletionMessageParam,
)

from .network import cannot_reach

API_RETRIES: Final = 0  # a voice turn answers now or says why; no silent back-off
VALIDATION_MAX_TOKENS: Final = 1
MAX_HISTORY_MESSAGES: Final = 30  # sent to the model besides the system prompt
MAX_HISTORY_CHARS: Final = 12_000  # of those messages' text, roughly 4k tokens


class ErrorKind(StrEnum):
    """Why a request failed, in terms the user can act on (also the translation keys)."""

    INVALID_AUTH = "invalid_auth"
    RATE_LIMITED = "rate_limited"
    TIMEOUT = "timeout"
    CANNOT_REACH = "cannot_reach"  # no DNS answer, no network or nothing listening (network.py)
    CANNOT_CONNECT = "cannot_connect"  # reached, but not an OpenAI-compatible service there
    BAD_REQUEST = "bad_request"
    BAD_RESPONSE = "bad_response"
    TOO_MANY_STEPS = "too_many_steps"
    UNKNOWN = "unknown"


class LlmError(Exception):
    """A request to the chat service failed."""

    def __init__(self, kind: ErrorKind, detail: str = "") -> None:
        """Keep the kind (for the user) and the detail (for the log)."""
        super().__init__(f"{kind}: {detail}" if detail else str(kind))
        self.kind = kind


def error_kind(err: Exception) -> ErrorKind:
    """Classify an exception raised while talking to the service."""
    match err:
        case openai.AuthenticationError() | openai.PermissionDeniedError():
            return ErrorKind.INVALID_AUTH
        case openai.RateLimitError():
            return ErrorKind.RATE_LIMITED
        case openai.APITimeoutError() | TimeoutError():
            return ErrorKind.TIMEOUT
        case openai.APIConnectionError() if cannot_reach(err):
            return ErrorKind.CANNOT_REACH
        case openai.APIConnectionError():
            return ErrorKind.CANNOT_CONNECT
        case openai.BadRequestError() | openai.NotFoundError() | openai.UnprocessableEntityError():
            return ErrorKind.BAD_REQUEST
        case openai.APIResponseValidationError() | ValueError() | LookupError() | TypeError():
            return ErrorKind.BAD_RESPONSE
        case openai.APIStatusError(status_code=402):
            return ErrorKind.RATE_LIMITED  # "payment required": out of credit
    return ErrorKind.UNKNOWN


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of the answer."""

    text: str


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    """A piece of the model's reasoning (DeepSeek, Qwen, GLM and Kimi stream it apart)."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A complete tool call the model asked for."""

    id: str
    name: str
    arguments: dict[str, Any]


type StreamItem = TextDelta | ReasoningDelta | ToolCall


@dataclass
class _PartialToolCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)

    def complete(self) -> ToolCall:
        text = "".join(self.arguments).strip()
        try:
            arguments = json.loads(text) if text else {}
        except ValueError as err:
            raise LlmError(ErrorKind.BAD_RESPONSE, f"tool arguments: {err}") from err
        if not isinstance(arguments, dict) or not self.name:
            raise LlmError(ErrorKind.BAD_RESPONSE, f"tool call {self.name!r}: {text!r}")
        return ToolCall(self.id, self.name, arguments)


class ToolCallAssembler:
    """Joins tool-call deltas (id and name first, arguments in pieces) into whole calls."""

    def __init__(self) -> None:
        """Start with no calls."""
        self._calls: dict[int, _PartialToolCall] = {}

    def add(self, chunk: ChatCompletionChunk) -> None:
        """Take the tool-call deltas of a chunk."""
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or ():
                index = delta.index if isinstance(delta.index, int) else 0  # some omit it
                call = self._calls.setdefault(index, _PartialToolCall())
                call.id = delta.id or call.id or f"call_{index}"
                if (function := delta.function) is not None:
                    call.name += function.name or ""
                    if function.arguments:
                        call.arguments.append(function.arguments)

    def calls(self) -> list[ToolCall]:
        """The calls, in the order the model made them."""
        return [self._calls[index].complete() for index in sorted(self._calls)]


def _reasoning(delta: Any) -> str | None:
    """The reasoning text providers send outside the OpenAI schema (`reasoning_content`)."""
    extra: Mapping[str, Any] = getattr(delta, "model_extra", None) or {}
    value = extra.get("reasoning_content")
    return value if isinstance(value, str) and value else None


async def async_stream_chat(
    client: openai.AsyncOpenAI,
    *,
    model: str,
    messages: Iterable[ChatCompletionMessageParam],
    tools: list[ChatCompletionFunctionToolParam] | None,
    temperature: float,
    max_tokens: int,
    timeout: float,
    user: str | None = None,
) -> AsyncIterator[StreamItem]:
    """Stream one completion: text and reasoning as they come, tool calls once complete."""
    extra: dict[str, Any] = {"tools": tools} if tools else {}
    if user:
        extra["user"] = user
    assembler = ToolCallAssembler()
    try:
        stream = await client.chat.completions.create(
            model=model,
            messages=list(messages),
            temperature=temperature,
            max_tokens=max_tokens,
            stream=True,
            timeout=timeout,
            **extra,
        )
        async with stream:
            async for chunk in stream:
                assembler.add(chunk)
                for choice in chunk.choices:
                    if reasoning := _reasoning(choice.delta):
                        yield ReasoningDelta(reasoning)
                    if text := choice.delta.content:
                        yield TextDelta(text)
    except LlmError:
        raise
    except (openai.OpenAIError, TimeoutError, ValueError, LookupError, TypeError) as err:
        raise LlmError(error_kind(err), str(err)) from err
    for call in assembler.calls():
        yield call


async def async_validate(
    client: openai.AsyncOpenAI, *, model: str, timeout: float
) -> ErrorKind | None:
    """Stream a one-token answer, as the agent will: checks the URL, the key and the model.

    Streamed, because some models (Qwen3 with thinking) refuse non-streamed requests.
    """
    try:
        async for _item in async_stream_chat(
            client,
            model=model,
            messages=[{"role": "user", "content": "hi"}],
            tools=None,
            temperature=0,
            max_tokens=VALIDATION_MAX_TOKENS,
            timeout=timeout,
        ):
            pass
    except LlmError as err:
        return err.kind
    return None


def _chars(message: ChatCompletionMessageParam) -> int:
    content = message.get("content")
    size = len(content) if isinstance(content, str) else 0
    if calls := message.get("tool_calls"):
        size += len(json.dumps(calls))
    return size


def trim_history(
    messages: list[ChatCompletionMessageParam],
) -> list[ChatCompletionMessageParam]:
    """Keep the system prompt and the newest messages within the limits.

    The kept part starts at a user message, so no tool result is sent without its call.
    """
    system = [m for m in messages[:1] if m["role"] == "system"]
    rest = messages[len(system) :][-MAX_HISTORY_MESSAGES:]
    total = sum(_chars(m) for m in rest)
    while len(rest) > 1 and (total > MAX_HISTORY_CHARS or rest[0]["role"] != "user"):
        if rest[0]["role"] == "user" and not any(m["role"] == "user" for m in rest[1:]):
            break  # never drop the request being answered
        total -= _chars(rest.pop(0))
    return system + rest
