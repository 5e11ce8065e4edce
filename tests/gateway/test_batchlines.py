"""The Batch API's pure rules: input lines, a batch's status and counts, result lines."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from jetgrid.gateway.batchlines import Line, parse_lines, result_line, tally
from jetgrid.gateway.batchstore import batch_of, line_of, owner_token
from jetgrid.gateway.errors import HTTPError
from jetgrid.gateway.files import parse_form
from jetgrid.projections.jobs import JobView

CHAT = "/v1/chat/completions"


def row(cid: str = "a", **over: Any) -> bytes:
    base = {"custom_id": cid, "method": "POST", "url": CHAT,
            "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]}}  # fmt: skip
    return json.dumps({**base, **over}).encode() + b"\n"


def test_lines_keep_order_and_skip_blank_ones() -> None:
    got = parse_lines(row("a") + b"\n  \n" + row("b"), CHAT, 10)
    assert [ln.custom_id for ln in got] == ["a", "b"]
    assert got[0].body["model"] == "m"


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"[1]\n", "Line 1 of the input file is not a JSON object."),
        (b"{bad\n", "Line 1 of the input file is not a JSON object ("),
        (row("a") + row("a"), "Line 2 of the input file repeats custom_id 'a'"),
        (row(""), "needs a 'custom_id' string of 1-512"),
        (row("x" * 513), "needs a 'custom_id'"),
        (row("a", method="GET"), "has method 'GET'; only POST"),
        (row("a", url="/v1/embeddings"), "has url '/v1/embeddings', but the batch's endpoint"),
        (row("a", body="hi"), "needs a 'body' object"),
        (row("a", body={"model": "m", "messages": []}), "field 'messages'"),
        (row("a", body={"model": "m", "messages": [{"role": "u"}], "stream": True}), "stream"),
        (row("a") + row("b") + row("c"), "Line 3 of the input file is past the limit of 2"),
        (b"", "holds no requests"),
    ],
)
def test_a_bad_line_is_a_400_naming_it(data: bytes, words: str) -> None:
    with pytest.raises(HTTPError) as err:
        parse_lines(data, CHAT, 2)
    assert err.value.status == 400 and words in err.value.message


def test_a_completions_line_takes_one_prompt() -> None:
    line = {
        "custom_id": "a",
        "url": "/v1/completions",
        "body": {"model": "m", "prompt": ["x", "y"]},
    }
    with pytest.raises(HTTPError, match="one prompt on each line"):
        parse_lines(json.dumps(line).encode(), "/v1/completions", 5)


@pytest.mark.parametrize(
    ("statuses", "cancel", "status", "counts", "ended"),
    [
        ([None, None], False, "in_progress", (0, 0), False),
        (["completed", None], False, "in_progress", (1, 0), False),
        (["completed", "running"], False, "in_progress", (1, 0), False),
        (["completed", "failed"], False, "completed", (1, 1), True),
        (["dead", "rejected", "completed"], False, "completed", (1, 2), True),
        (["completed", "queued"], True, "cancelling", (1, 0), False),
        (["completed", "cancelled"], True, "cancelled", (1, 0), True),
        (["cancelled", "cancelled"], True, "cancelled", (0, 0), True),
        (["cancelled"], False, "completed", (0, 0), True),  # cancelled one by one, not as a batch
        ([], False, "completed", (0, 0), True),
    ],
)
def test_tally(
    statuses: list[str | None], cancel: bool, status: str, counts: tuple[int, int], ended: bool
) -> None:
    t = tally(statuses, cancel_asked=cancel)
    assert (t.status, (t.completed, t.failed), t.ended) == (status, counts, ended)
    assert t.counts() == {"total": len(statuses), "completed": counts[0], "failed": counts[1]}


def _view(status: str, **more: Any) -> JobView:
    when = datetime(2026, 1, 1, tzinfo=UTC)
    return JobView(job_id="batch_x-0", status=status, model="m", finished_at=when, **more)  # type: ignore[arg-type]


def test_result_lines() -> None:
    line = Line("cid", {"model": "m"})
    ok, text = result_line(CHAT, line, _view("completed", output={"response": "hey"}))
    out = json.loads(text)
    assert not ok and out["custom_id"] == "cid" and out["error"] is None
    assert out["response"]["body"]["choices"][0]["message"]["content"] == "hey"
    assert out["response"]["body"]["created"] == 1767225600
    bad, text = result_line(CHAT, line, _view("failed", error="boom"))
    assert bad and json.loads(text)["error"] == {
        "code": "job_failed",
        "message": "job batch_x-0 failed: boom",
    }
    _, text = result_line(CHAT, line, _view("cancelled"))
    assert json.loads(text)["error"]["code"] == "batch_cancelled"
    _, text = result_line(
        "/v1/embeddings", line, _view("completed", output={"embeddings": [[1.0]]})
    )
    assert json.loads(text)["response"]["body"]["data"] == [
        {"object": "embedding", "index": 0, "embedding": [1.0]}
    ]


def test_ids() -> None:
    bid = "batch_" + "a" * 32
    assert batch_of(f"{bid}-12") == bid and line_of(bid, f"{bid}-12") == 12
    assert batch_of("batch_x-1") is None and batch_of(bid) is None
    assert line_of(bid, "other-1") is None
    assert owner_token("") == "open" and owner_token("sha256:ab") != owner_token("sha256:cd")


@pytest.mark.parametrize(
    ("ctype", "body", "words"),
    [
        ("multipart/form-data", b"garbage", "has no parts"),
        ("multipart/form-data; boundary=x", b"garbage", "has no parts"),
        ('multipart/form-data; boundary="', b"\x00\xff" * 100, "has no parts"),
        ("text/plain", b"x", "takes multipart/form-data"),
        ("", b"x", "no content type"),
    ],
)
def test_a_hostile_upload_is_a_400(ctype: str, body: bytes, words: str) -> None:
    with pytest.raises(HTTPError) as err:
        parse_form(ctype, body)
    assert err.value.status == 400 and words in err.value.message


def test_an_upload_keeps_its_bytes_exactly() -> None:
    data = b"\x00\xff\r\nab\nc\r\n"
    body = (
        b'--x\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n" + data + b"\r\n--x--\r\n"
    )
    got = parse_form("multipart/form-data; boundary=x", body)
    assert got == {"purpose": (None, b"batch"), "file": ("a.jsonl", data)}
