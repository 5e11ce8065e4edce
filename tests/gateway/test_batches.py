"""The Batch API driven by the official `openai` client, unchanged: files.create, batches
create/retrieve/cancel/list, files.content; each line a low-priority job, results in an output
file, failures in an error file, progress counts right, owner-bound, and a batch webhook."""

from __future__ import annotations

import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import openai
import pytest

from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.provision import provision_batches
from jetgrid.coordinator.settings import Settings
from jetgrid.events.addressing import Speaker
from jetgrid.gateway.auth import hash_key
from jetgrid.gateway.batchstore import BatchRecord, BatchStore, FileInfo, FileStore
from tests.gateway.test_webhooks import Receiver, receiving, webhook_service
from tests.helpers import job, job_views, until

pytestmark = pytest.mark.integration

KEY_A, KEY_B = "jg_batch_key_a", "jg_batch_key_b"


def jsonl(*rows: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def chat_line(cid: str, text: str, **more: Any) -> dict[str, Any]:
    body = {"model": "echo", "messages": [{"role": "user", "content": text}], **more}
    return {"custom_id": cid, "method": "POST", "url": "/v1/chat/completions", "body": body}


@contextlib.asynccontextmanager
async def batch_gateway(
    settings: Settings, serve_gateway: Callable[[Settings], Any], bus: Bus
) -> AsyncIterator[str]:
    await provision_batches(bus.js, settings)
    async with serve_gateway(settings) as base:
        yield base


def client(base: str, key: str = "unused") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)


async def finished(c: openai.AsyncOpenAI, batch_id: str, status: str = "completed") -> Any:
    async def done() -> Any:
        b = await c.batches.retrieve(batch_id)
        return b if b.status == status else None

    return await until(done, timeout=30)


async def test_a_chat_batch_runs_every_line_and_writes_output_and_error_files(
    streams: Settings,
    serve_gateway: Callable[[Settings], Any],
    start_worker: Callable[..., Awaitable[Any]],
    bus: Bus,
) -> None:
    await start_worker(concurrency=4)
    rows = [
        chat_line("first", "alpha beta"),
        chat_line("broken", "never", fail="permanent"),
        chat_line("third", "gamma"),
    ]
    async with batch_gateway(streams, serve_gateway, bus) as base, client(base) as c:
        up = await c.files.create(file=("in.jsonl", jsonl(*rows)), purpose="batch")
        assert up.object == "file" and up.purpose == "batch" and up.bytes == len(jsonl(*rows))
        assert (await c.files.retrieve(up.id)).filename == "in.jsonl"
        assert (await c.files.content(up.id)).content == jsonl(*rows)
        batch = await c.batches.create(
            input_file_id=up.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        assert batch.status == "in_progress" and batch.request_counts is not None
        assert batch.request_counts.total == 3
        done = await finished(c, batch.id)
        assert done.request_counts is not None
        assert (done.request_counts.completed, done.request_counts.failed) == (2, 1)
        assert done.output_file_id and done.error_file_id and done.completed_at
        out = (await c.files.content(done.output_file_id)).content.decode().splitlines()
        errors = (await c.files.content(done.error_file_id)).content.decode().splitlines()
        again = await c.batches.retrieve(batch.id)  # the files are written once, then found
        assert again.output_file_id == done.output_file_id
        with pytest.raises(openai.ConflictError, match="already completed"):
            await c.batches.cancel(batch.id)
    results = [json.loads(line) for line in out]
    assert [r["custom_id"] for r in results] == ["first", "third"]  # input order
    first = results[0]["response"]
    assert first["status_code"] == 200 and first["body"]["object"] == "chat.completion"
    assert "alpha beta" in first["body"]["choices"][0]["message"]["content"]
    (err,) = [json.loads(line) for line in errors]
    assert err["custom_id"] == "broken" and err["response"] is None
    assert err["error"]["code"] == "job_failed" and "permanently" in err["error"]["message"]
    # Each line was a low-priority job carrying the batch id and its custom_id.
    async with serve_gateway(streams) as base2:  # a second gateway answers the same
        async with client(base2) as c2:
            assert (await c2.batches.retrieve(batch.id)).request_counts == done.request_counts
    views = await job_views(bus.js, streams)
    view = views[f"{batch.id}-0"]
    assert view.priority == "low"
    msg = await bus.message(streams.streams.jobs, view.jobs_seq or 0)
    assert msg is not None
    sub = json.loads(msg.data)["data"]
    assert (sub["batch_id"], sub["custom_id"]) == (batch.id, "first")


async def test_completions_and_embeddings_batches(
    streams: Settings,
    serve_gateway: Callable[[Settings], Any],
    start_worker: Callable[..., Awaitable[Any]],
    bus: Bus,
) -> None:
    await start_worker(concurrency=4)
    comp = {"custom_id": "c", "method": "POST", "url": "/v1/completions",
            "body": {"model": "echo", "prompt": "one two"}}  # fmt: skip
    emb = {"custom_id": "e", "method": "POST", "url": "/v1/embeddings",
           "body": {"model": "echo", "input": ["x y", "z"]}}  # fmt: skip
    async with batch_gateway(streams, serve_gateway, bus) as base, client(base) as c:
        f1 = await c.files.create(file=("c.jsonl", jsonl(comp)), purpose="batch")
        f2 = await c.files.create(file=("e.jsonl", jsonl(emb)), purpose="batch")
        b1 = await c.batches.create(
            input_file_id=f1.id, endpoint="/v1/completions", completion_window="24h"
        )
        b2 = await c.batches.create(
            input_file_id=f2.id, endpoint="/v1/embeddings", completion_window="24h"
        )
        d1, d2 = await finished(c, b1.id), await finished(c, b2.id)
        r1 = json.loads((await c.files.content(d1.output_file_id or "")).content)
        r2 = json.loads((await c.files.content(d2.output_file_id or "")).content)
        assert d1.error_file_id is None
    assert r1["response"]["body"]["object"] == "text_completion"
    assert "one two" in r1["response"]["body"]["choices"][0]["text"]
    vectors = r2["response"]["body"]["data"]
    assert [v["index"] for v in vectors] == [0, 1] and len(vectors[0]["embedding"]) > 0


async def test_cancel_while_queued_then_a_worker_ends_it_cancelled(
    streams: Settings,
    serve_gateway: Callable[[Settings], Any],
    start_worker: Callable[..., Awaitable[Any]],
    bus: Bus,
) -> None:
    rows = [chat_line(f"l{i}", f"text {i}") for i in range(3)]
    async with batch_gateway(streams, serve_gateway, bus) as base, client(base) as c:
        up = await c.files.create(file=("in.jsonl", jsonl(*rows)), purpose="batch")
        batch = await c.batches.create(
            input_file_id=up.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        cancelling = await c.batches.cancel(batch.id)  # no worker yet: every line is queued
        assert cancelling.status == "cancelling" and cancelling.cancelling_at
        await start_worker(concurrency=4)
        done = await finished(c, batch.id, "cancelled")
        assert done.request_counts is not None
        assert (done.request_counts.completed, done.request_counts.failed) == (0, 0)
        assert done.output_file_id is None and done.error_file_id
        errors = (await c.files.content(done.error_file_id)).content.decode().splitlines()
    assert {json.loads(e)["error"]["code"] for e in errors} == {"batch_cancelled"}


async def test_one_key_never_sees_another_keys_files_or_batches(
    streams: Settings, serve_gateway: Callable[[Settings], Any], bus: Bus
) -> None:
    settings = streams.replace(api_keys=f"{hash_key(KEY_A)},{hash_key(KEY_B)}")
    async with (
        batch_gateway(settings, serve_gateway, bus) as base,
        client(base, KEY_A) as a,
        client(base, KEY_B) as b,
    ):
        up = await a.files.create(file=("in.jsonl", jsonl(chat_line("x", "y"))), purpose="batch")
        batch = await a.batches.create(
            input_file_id=up.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        for call in (
            b.files.retrieve(up.id),
            b.files.content(up.id),
            b.batches.retrieve(batch.id),
            b.batches.cancel(batch.id),
            b.batches.create(
                input_file_id=up.id, endpoint="/v1/chat/completions", completion_window="24h"
            ),
        ):
            with pytest.raises(openai.NotFoundError):
                await call
        assert [x.id async for x in a.batches.list()] == [batch.id]
        assert [x.id async for x in b.batches.list()] == []


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"not json\n", "Line 1 of the input file is not a JSON object"),
        (jsonl(chat_line("a", "x"), chat_line("a", "y")), "Line 2 of the input file repeats"),
        (jsonl({**chat_line("a", "x"), "url": "/v1/embeddings"}), "batch's endpoint is"),
        (jsonl({"custom_id": "a", "url": "/v1/chat/completions"}), "needs a 'body' object"),
        (jsonl(chat_line("a", "x", stream=True)), "cannot stream"),
        (jsonl({**chat_line("a", "x"), "body": {"model": "echo"}}), "field 'messages'"),
        (b"\n\n", "holds no requests"),
    ],
)
async def test_a_bad_input_file_is_refused_naming_the_line(
    streams: Settings,
    serve_gateway: Callable[[Settings], Any],
    bus: Bus,
    content: bytes,
    words: str,
) -> None:
    async with batch_gateway(streams, serve_gateway, bus) as base, client(base) as c:
        up = await c.files.create(file=("in.jsonl", content), purpose="batch")
        with pytest.raises(openai.BadRequestError) as err:
            await c.batches.create(
                input_file_id=up.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
    assert words in err.value.message


async def test_bad_uploads_and_unknown_ids_raise_the_clients_own_errors(
    streams: Settings, serve_gateway: Callable[[Settings], Any], bus: Bus
) -> None:
    settings = streams.replace(files_max_bytes=64)
    async with batch_gateway(settings, serve_gateway, bus) as base, client(base) as c:
        with pytest.raises(openai.BadRequestError, match="purpose"):
            await c.files.create(file=("in.jsonl", b"{}\n"), purpose="fine-tune")
        with pytest.raises(openai.APIStatusError) as big:
            await c.files.create(file=("in.jsonl", b"x" * 100), purpose="batch")
        assert big.value.status_code == 413 and "files_max_bytes" in big.value.message
        with pytest.raises(openai.NotFoundError):
            await c.files.retrieve("file-nope")
        with pytest.raises(openai.NotFoundError):
            await c.batches.retrieve("batch_nope")
        with pytest.raises(openai.NotFoundError):
            await c.batches.create(
                input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h"
            )
        with pytest.raises(openai.BadRequestError, match="endpoint"):
            await c.batches.create(
                input_file_id="file-nope",
                endpoint="/v1/responses",  # type: ignore[arg-type]
                completion_window="24h",
            )


async def test_a_batch_fires_its_webhook_when_its_last_line_ends(
    streams: Settings,
    serve_gateway: Callable[[Settings], Any],
    start_worker: Callable[..., Awaitable[Any]],
    bus: Bus,
) -> None:
    secret = "whsec_" + base64.b64encode(b"batch-webhook-secret-0123456789ab").decode()
    settings = streams.replace(
        webhook_allow_private=True, webhook_secret=secret, webhook_retry_s=0.05
    )
    await start_worker(concurrency=4)
    receiver = Receiver(secret)
    rows = [chat_line(f"l{i}", f"text {i}") for i in range(3)]
    rows.append(chat_line("l3", "no", fail="permanent"))
    async with (
        receiving(receiver),
        webhook_service(settings),
        batch_gateway(settings, serve_gateway, bus) as base,
        client(base) as c,
    ):
        up = await c.files.create(file=("in.jsonl", jsonl(*rows)), purpose="batch")
        batch = await c.batches.create(
            input_file_id=up.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata={"webhook_url": f"{receiver.url}/batch"},
        )
        await until(lambda: receiver.got.get("/batch"), timeout=30)
        done = await c.batches.retrieve(batch.id)
    assert done.status == "completed"
    ((headers, body, ok), *more) = receiver.got["/batch"]
    assert ok and headers["webhook-id"] == f"batch_{batch.id}"
    assert all(h["webhook-id"] == headers["webhook-id"] for h, _, _ in more)  # repeats dedupe
    sent = json.loads(body)
    assert sent["type"] == "batch.completed"
    counts = {"total": 4, "completed": 3, "failed": 1}
    assert sent["data"] == {
        "id": batch.id,
        "object": "batch",
        "status": "completed",
        "request_counts": counts,
    }
    assert done.request_counts is not None and done.request_counts.model_dump() == counts


async def test_an_upload_may_be_larger_than_other_requests_up_to_files_max_bytes(
    streams: Settings, serve_gateway: Callable[[Settings], Any], bus: Bus
) -> None:
    settings = streams.replace(max_request_bytes=1024, files_max_bytes=8192)
    big = jsonl(*(chat_line(f"l{i}", "word " * 20) for i in range(40)))[:8000]
    async with batch_gateway(settings, serve_gateway, bus) as base, client(base) as c:
        up = await c.files.create(file=("big.jsonl", big), purpose="batch")
        assert up.bytes == len(big) > 1024
        with pytest.raises(openai.APIStatusError) as err:  # other routes keep their limit
            await c.chat.completions.create(
                model="echo", messages=[{"role": "user", "content": "x" * 2000}]
            )
    assert err.value.status_code == 413


async def test_a_create_that_died_half_way_is_finished_by_the_next_read(
    streams: Settings,
    serve_gateway: Callable[[Settings], Any],
    start_worker: Callable[..., Awaitable[Any]],
    bus: Bus,
) -> None:
    """A gateway that stored the record and one line's job, then died: any gateway's next read
    of the (minute-old) batch stores the other lines once, and the batch completes."""
    await start_worker(concurrency=4)
    data = jsonl(chat_line("a", "one"), chat_line("b", "two"))
    async with batch_gateway(streams, serve_gateway, bus) as base, client(base) as c:
        info = FileInfo(id="file-died", owner="open", purpose="batch", filename="in.jsonl",
                        bytes=len(data), created_at=1)  # fmt: skip
        await FileStore(bus, streams).put(info, data)
        record = BatchRecord(id="batch_" + "d" * 32, owner="open", endpoint="/v1/chat/completions",
                             input_file_id=info.id, total=2,
                             created_at=int(time.time()) - 120)  # fmt: skip
        await BatchStore(bus, streams).put(record)
        first = job(0, job_id=record.job_id(0), kind="chat", prompt=None,
                    input={"messages": [{"role": "user", "content": "one"}]})  # fmt: skip
        await bus.store(first, Speaker.service("gateway"))  # line 0 made it, line 1 did not
        done = await finished(c, record.id)
        assert done.request_counts is not None and done.request_counts.completed == 2
        rows = (await c.files.content(done.output_file_id or "")).content.decode().splitlines()
    assert [json.loads(r)["custom_id"] for r in rows] == ["a", "b"]
    stored = await bus.messages(streams.streams.jobs, subject=f"{streams.subject_prefix}.jobs.>")
    ids = [json.loads(m.data)["data"]["job_id"] for m in stored]
    assert sorted(ids) == [record.job_id(0), record.job_id(1)]  # line 0 not stored twice
