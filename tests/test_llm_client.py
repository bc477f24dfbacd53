"""The HA-free chat-completions helpers: tool-call assembly, history limits, error kinds."""

from __future__ import annotations

import errno

import httpx
import openai
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam
import pytest

from custom_components.xiaozhi.llm_client import (
    MAX_HISTORY_MESSAGES,
    ErrorKind,
    LlmError,
    ToolCall,
    ToolCallAssembler,
    error_kind,
    trim_history,
)


def chunk(*tool_calls: dict[str, object]) -> ChatCompletionChunk:
    return ChatCompletionChunk.model_validate(
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "m",
            "choices": [{"index": 0, "delta": {"tool_calls": list(tool_calls)}}],
        }
    )


def test_tool_calls_are_joined_from_their_pieces() -> None:
    assembler = ToolCallAssembler()
    assembler.add(chunk({"index": 0, "id": "a", "function": {"name": "Turn", "arguments": ""}}))
    assembler.add(chunk({"index": 1, "id": "b", "function": {"name": "Get"}}))
    for piece in ('{"na', 'me": "Kit', 'chen"}'):
        assembler.add(chunk({"index": 0, "function": {"arguments": piece}}))
    assert assembler.calls() == [
        ToolCall("a", "Turn", {"name": "Kitchen"}),
        ToolCall("b", "Get", {}),
    ]


def test_broken_tool_arguments_are_a_bad_response() -> None:
    assembler = ToolCallAssembler()
    assembler.add(chunk({"index": 0, "id": "a", "function": {"name": "T", "arguments": "{"}}))
    with pytest.raises(LlmError) as info:
        assembler.calls()
    assert info.value.kind == "bad_response"


def test_history_keeps_the_newest_turns_from_a_user_message() -> None:
    messages: list[ChatCompletionMessageParam] = [{"role": "system", "content": "S"}]
    for turn in range(MAX_HISTORY_MESSAGES):
        messages.append({"role": "user", "content": f"q{turn}"})
        messages.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "x", "type": "function", "function": {"name": "T", "arguments": "{}"}}
                ],
            }
        )
        messages.append({"role": "tool", "tool_call_id": "x", "content": f"a{turn}"})
    kept = trim_history(messages)
    assert kept[0] == {"role": "system", "content": "S"}
    assert kept[1]["role"] == "user"
    assert kept[-1] == messages[-1]
    assert len(kept) <= MAX_HISTORY_MESSAGES + 1


def test_history_never_drops_the_request() -> None:
    long = "x" * 100_000
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "old"},
        {"role": "assistant", "content": "old answer"},
        {"role": "user", "content": long},
    ]
    assert trim_history(messages) == [messages[0], messages[3]]


def test_a_name_with_two_addresses_refused_on_both_is_unreachable() -> None:
    # As httpx reports it for "localhost" (::1 and 127.0.0.1): the refusals in a group.
    refusals = ExceptionGroup(
        "multiple connection attempts failed",
        [
            ConnectionRefusedError(errno.ECONNREFUSED, "::1"),
            ConnectionRefusedError(errno.ECONNREFUSED, "127.0.0.1"),
        ],
    )
    attempts = OSError("All connection attempts failed")
    attempts.__cause__ = refusals
    request = httpx.Request("POST", "http://localhost:9/v1/chat/completions")
    err = openai.APIConnectionError(request=request)
    err.__cause__ = attempts
    assert error_kind(err) is ErrorKind.CANNOT_REACH
    # A connection that fails otherwise (reset, TLS): the address is not the service.
    assert error_kind(openai.APIConnectionError(request=request)) is ErrorKind.CANNOT_CONNECT
