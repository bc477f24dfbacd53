"""The endpoint link's pure parts: fitting answers to the limits, and the backoff."""

from __future__ import annotations

import random

from custom_components.xiaozhi.mcp_link import Backoff, EndpointLimits, cut_call_result, fit_tools
from custom_components.xiaozhi.mcp_link.limits import OVER_LIST_SIZE, OVER_TOOL_COUNT

SMALL = EndpointLimits(
    max_tools=3, max_tools_list_chars=400, max_description_chars=20, max_result_chars=50
)


def tool(name: str, description: str = "does a thing") -> dict[str, object]:
    return {"name": name, "description": description, "inputSchema": {"type": "object"}}


def test_fit_keeps_order_and_counts_what_it_left_out() -> None:
    fit = fit_tools([tool(f"t{n}") for n in range(5)], SMALL)
    assert [t["name"] for t in fit.tools] == ["t0", "t1", "t2"]
    assert fit.dropped == ["t3", "t4"]
    assert fit.over == {OVER_TOOL_COUNT}
    assert fit.offered == 5


def test_fit_keeps_the_list_within_its_size() -> None:
    fit = fit_tools([tool("a", "x" * 20), tool("b", "y" * 20), tool("c", "z" * 20)], SMALL)
    assert fit.chars <= SMALL.max_tools_list_chars
    assert OVER_LIST_SIZE in fit.over or len(fit.tools) == 3
    big = EndpointLimits(max_tools=99, max_tools_list_chars=150, max_description_chars=20)
    fit = fit_tools([tool(f"t{n}") for n in range(5)], big)
    assert fit.chars <= 150
    assert fit.over == {OVER_LIST_SIZE}
    assert len(fit.tools) + len(fit.dropped) == 5


def test_long_descriptions_are_cut_not_the_tool() -> None:
    fit = fit_tools([tool("wordy", "w" * 100)], SMALL)
    assert fit.tools[0]["description"] == "w" * 19 + "…"
    assert fit.cut_descriptions == ["wordy"]
    assert not fit.over


def test_a_long_result_is_cut_with_a_marker_in_one_block() -> None:
    result = {"content": [{"type": "text", "text": "a" * 80}, {"type": "text", "text": "b" * 80}]}
    assert cut_call_result(result, 100)
    (block,) = result["content"]
    assert len(block["text"]) <= 100
    assert block["text"].startswith("a" * 40)
    assert block["text"].endswith("of 160 characters shown]")
    tiny = {"content": [{"type": "text", "text": "c" * 80}]}
    assert cut_call_result(tiny, 10)  # no room for the marker: still within the limit
    assert tiny["content"] == [{"type": "text", "text": "c" * 10}]


def test_a_short_result_is_kept_whole() -> None:
    result = {"content": [{"type": "text", "text": "ok"}], "isError": False}
    assert not cut_call_result(result, 50)
    assert result["content"] == [{"type": "text", "text": "ok"}]


def test_backoff_doubles_with_jitter_up_to_its_ceiling_and_resets() -> None:
    backoff = Backoff(1.0, 8.0, rng=random.Random(4))
    delays = [backoff.next_delay() for _ in range(6)]
    for attempt, delay in enumerate(delays):
        ceiling = min(8.0, 2.0**attempt)
        assert ceiling / 2 <= delay <= ceiling
    assert len(set(delays)) == len(delays)  # jittered: no two clients retry in step
    backoff.reset()
    assert backoff.next_delay() <= 1.0
