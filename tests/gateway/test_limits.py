"""Per-key and per-gateway limits on open streams and waits: the pure slot counter, then the
gateway answering 429 with Retry-After in each API's error shape."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from nats.aio.client import Client as NATS

from jetgrid.coordinator.settings import Settings
from jetgrid.events import JobCompleted, encode
from jetgrid.gateway.ratelimit import Slots
from tests.helpers import job, submit, until


def test_slots_count_per_owner_and_in_all() -> None:
    s = Slots(per_owner=2, total=3)
    assert s.acquire("a") is None and s.acquire("a") is None
    assert s.acquire("a") == "owner"  # a's own limit, nothing taken
    assert s.acquire("b") is None
    assert s.acquire("c") == "total"  # the gateway's limit
    assert (s.held, s.in_use) == ({"a": 2, "b": 1}, 3)
    s.release("a")
    assert s.acquire("c") is None
    assert s.acquire("a") == "total"


def test_releasing_what_is_not_held_changes_nothing() -> None:
    s = Slots(per_owner=1, total=1)
    s.release("nobody")
    assert (s.held, s.in_use) == ({}, 0)
    assert s.acquire("a") is None
    s.release("a")
    s.release("a")
    assert (s.held, s.in_use) == ({}, 0)
    assert s.acquire("b") is None


@pytest.mark.parametrize(("per_owner", "total"), [(1, 1), (1, 5), (3, 2), (4, 4)])
def test_at_most_the_smaller_limit_is_granted_to_one_owner(per_owner: int, total: int) -> None:
    s = Slots(per_owner, total)
    granted = sum(s.acquire("a") is None for _ in range(10))
    assert granted == min(per_owner, total)


@contextlib.asynccontextmanager
async def _open_events(http: httpx.AsyncClient, job_id: str) -> AsyncIterator[httpx.Response]:
    async with http.stream("GET", f"/v1/jobs/{job_id}/events") as r:
        if r.status_code == 200:
            body = r.aiter_bytes()  # kept until the stream is left: dropping it closes it
            assert (await anext(body)).startswith(b"retry:")  # it is open
            yield r
        else:
            await r.aread()
            yield r


def _refused(r: httpx.Response, limit: str) -> None:
    assert r.status_code == 429, r.text
    assert r.headers["Retry-After"].isdigit() and int(r.headers["Retry-After"]) >= 1
    err = r.json()["error"]
    assert err["type"] == "rate_limited" and limit in err["message"], err


@pytest.mark.integration
async def test_event_streams_past_the_per_key_limit_are_429_until_one_closes(
    streams: Settings, nc: NATS, serve_gateway: Any
) -> None:
    await submit(nc, streams, job("held", model="nobody-serves-this"))
    settings = streams.replace(max_streams_per_key=2)
    async with serve_gateway(settings) as base, httpx.AsyncClient(base_url=base) as http:
        async with contextlib.AsyncExitStack() as stack:
            first = await stack.enter_async_context(_open_events(http, "jheld"))
            second = await stack.enter_async_context(_open_events(http, "jheld"))
            assert (first.status_code, second.status_code) == (200, 200)
            async with _open_events(http, "jheld") as third:
                _refused(third, "max_streams_per_key")
        # Both closed: their slots come back.

        async def reopens() -> bool:
            async with _open_events(http, "jheld") as again:
                return again.status_code == 200

        await until(reopens)


@pytest.mark.integration
async def test_the_gateway_limit_names_the_gateway(
    streams: Settings, nc: NATS, serve_gateway: Any
) -> None:
    await submit(nc, streams, job("held", model="nobody-serves-this"))
    settings = streams.replace(max_streams=1)
    async with serve_gateway(settings) as base, httpx.AsyncClient(base_url=base) as http:
        async with _open_events(http, "jheld") as first, _open_events(http, "jheld") as second:
            assert first.status_code == 200
            _refused(second, "max_streams")
            assert "This gateway" in second.json()["error"]["message"]


@pytest.mark.integration
async def test_open_waits_past_the_limit_are_429(
    streams: Settings, nc: NATS, serve_gateway: Any
) -> None:
    await submit(nc, streams, job("held", model="nobody-serves-this"))
    settings = streams.replace(max_waits_per_key=1)
    async with (
        serve_gateway(settings) as base,
        httpx.AsyncClient(base_url=base, timeout=90) as http,
    ):
        held: list[asyncio.Task[httpx.Response]] = []

        def hold() -> None:
            held.append(asyncio.create_task(http.get("/v1/jobs/jheld/result?wait=60")))

        hold()
        try:

            async def refused() -> httpx.Response | None:
                r = await http.get("/v1/jobs/jheld/result?wait=0.05")
                if held[-1].done():  # a probe held the slot first and this one was refused
                    hold()
                    return None
                return r if r.status_code == 429 else None

            r = await until(refused)
            _refused(r, "max_waits_per_key")
            # Without a wait the same request is not limited.
            assert (await http.get("/v1/jobs/jheld/result")).status_code == 202
        finally:  # the job completes, so the held wait ends and the gateway can stop
            done = JobCompleted(job_id="jheld", worker_id="w9", attempt=1, output={}, duration_s=0)
            subject = streams.subjects.job_event("jheld", "completed", "w9")
            await nc.jetstream().publish(subject, encode(done, source="test"))
            await asyncio.gather(*held, return_exceptions=True)


@pytest.mark.integration
async def test_llm_streams_share_the_stream_slots(
    streams: Settings, nc: NATS, serve_gateway: Any, start_worker: Any, wait_model: Any
) -> None:
    await start_worker()
    await submit(nc, streams, job("held", model="nobody-serves-this"))
    settings = streams.replace(max_streams_per_key=1)
    async with serve_gateway(settings) as base, httpx.AsyncClient(base_url=base) as http:
        await wait_model(base)
        async with _open_events(http, "jheld") as first:
            assert first.status_code == 200
            chat = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
            r = await http.post("/v1/chat/completions", json={**chat, "stream": True})
            _refused(r, "max_streams_per_key")
            r = await http.post("/api/chat", json=chat)  # Ollama streams by default
            assert r.status_code == 429 and "max_streams_per_key" in r.json()["error"]
            assert r.headers["Retry-After"].isdigit()
            # Not streaming, it is a wait, not a stream: served.
            r = await http.post("/v1/chat/completions", json=chat)
            assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "hi"
