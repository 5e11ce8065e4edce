"""Responses API shapes without a server: request messages, statuses, the Response object."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from jetgrid.gateway.errors import HTTPError
from jetgrid.gateway.responses import ResponseReq, messages_of, response_body, status_of
from jetgrid.projections.jobs import JobView


@pytest.mark.parametrize(
    ("body", "messages"),
    [
        ({"input": "hi"}, [{"role": "user", "content": "hi"}]),
        (
            {"input": "hi", "instructions": "be brief"},
            [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_text", "text": "a"}]},
                       {"type": "message", "role": "assistant", "content": "b"}]},
            [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
        ),
    ],
)  # fmt: skip
def test_input_becomes_chat_messages(body: dict[str, Any], messages: list[Any]) -> None:
    assert messages_of(ResponseReq.model_validate({"model": "m", **body})) == messages


def test_an_item_that_is_not_a_message_is_refused() -> None:
    req = ResponseReq.model_validate({"model": "m", "input": [{"type": "function_call"}]})
    with pytest.raises(HTTPError) as err:
        messages_of(req)
    assert err.value.status == 400 and "function_call" in err.value.message


@pytest.mark.parametrize(
    ("status", "expected"),
    [("queued", "queued"), ("claimed", "in_progress"), ("running", "in_progress"),
     ("completed", "completed"), ("cancelled", "cancelled"), ("failed", "failed"),
     ("dead", "failed"), ("rejected", "failed")],
)  # fmt: skip
def test_job_statuses_map_to_response_statuses(status: Any, expected: str) -> None:
    assert status_of(JobView("j", status=status)) == expected


def test_the_body_is_a_valid_openai_response() -> None:
    view = JobView("j", status="completed", model="m", output={"response": "out"},
                   usage={"prompt_tokens": 2, "completion_tokens": 3})  # fmt: skip
    r = Response.model_validate(response_body(view))
    assert (r.id, r.status, r.output_text, r.usage and r.usage.total_tokens) == (
        "resp_j", "completed", "out", 5
    )  # fmt: skip
    failed = Response.model_validate(response_body(JobView("j", status="dead", error="gone")))
    assert failed.status == "failed" and failed.error and failed.error.message == "gone"


class FakeRun:
    """What stream_events reads of an LLMRun: its stream of tokens and outcome."""

    def __init__(self, *items: tuple[str, Any]) -> None:
        self.items = items

    async def stream(self) -> Any:
        for item in self.items:
            yield item


async def _events(run: Any, after: int = -1) -> list[Any]:
    from jetgrid.gateway.responses import stream_events

    out = []
    async for raw in stream_events(run, JobView("j", status="queued", model="m"), after):
        name, data = raw.decode().strip().split("\n")
        out.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return out


async def test_every_streaming_event_is_a_valid_openai_event() -> None:
    done = JobView("j", status="completed", model="m", output={"response": "ab"})
    events = await _events(FakeRun(("token", "a"), ("token", "b"), ("done", done)))
    adapter: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
    parsed = [adapter.validate_python(body) for _, body in events]
    assert [e.sequence_number for e in parsed] == list(range(10))
    assert [name for name, _ in events] == [e.type for e in parsed]
    assert parsed[-1].type == "response.completed" and parsed[-1].response.output_text == "ab"
    resumed = await _events(FakeRun(("token", "a"), ("token", "b"), ("done", done)), after=4)
    assert [b["sequence_number"] for _, b in resumed] == list(range(5, 10))
    failed = await _events(FakeRun(("done", JobView("j", status="failed", error="x"))))
    assert adapter.validate_python(failed[-1][1]).type == "response.failed"
