"""Serving is independent of history (issue 12): the gateway follows the log from its end, keeps
a bounded cache, and reads any retained job back from the log by id."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from nats.aio.client import Client as NATS

from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.settings import Settings
from jetgrid.events import (
    JobClaimed,
    JobCompleted,
    JobStarted,
    WorkerHeartbeat,
    WorkerRegistered,
    encode,
)
from jetgrid.gateway.board import JobBoard
from jetgrid.gateway.fleet import Fleet
from tests.helpers import job, submit, until

pytestmark = pytest.mark.integration


async def _lifecycle(
    nc: NATS, s: Settings, job_id: str, jobs_seq: int, *, end: bool = True
) -> None:
    js = nc.jetstream()
    events: list[tuple[str, Any]] = [
        ("claimed", JobClaimed(job_id=job_id, worker_id="w1", attempt=1, jobs_seq=jobs_seq)),
        ("started", JobStarted(job_id=job_id, worker_id="w1", attempt=1)),
    ]
    if end:
        done = JobCompleted(
            job_id=job_id, worker_id="w1", attempt=1, output={"text": job_id}, duration_s=0
        )
        events.append(("completed", done))
    for name, ev in events:
        await js.publish(s.subjects.job_event(job_id, name, "w1"), encode(ev, source="test"))


async def _history(nc: NATS, s: Settings, n: int, prefix: str = "old") -> None:
    for i in range(n):
        seq = await submit(nc, s, job(f"{prefix}{i}"))
        await _lifecycle(nc, s, f"j{prefix}{i}", seq)


def _sse(text: str) -> list[tuple[str, str]]:
    out = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
        if "event" in fields:
            out.append((fields["event"], fields.get("id", "")))
    return out


async def test_the_board_starts_empty_and_stays_bounded(streams: Settings, nc: NATS) -> None:
    await _history(nc, streams, 30)
    board = JobBoard(Bus(nc, streams), streams, capacity=5)
    await board.start()
    try:
        await asyncio.wait_for(board.caught_up.wait(), 10)
        assert board.jobs == {}  # nothing of the finished history is folded or kept
        for i in range(20):
            seq = await submit(nc, streams, job(f"new{i}"))
            await _lifecycle(nc, streams, f"jnew{i}", seq)
            await board.sync()
            assert len(board.jobs) <= 5
        for i in (0, 17, 29):  # any old job is read back, and the cache stays bounded
            view = await board.find(f"jold{i}")
            assert view is not None and view.status == "completed"
            assert view.output == {"text": f"jold{i}"} and view.model == "echo"
            assert len(board.seqs(f"jold{i}")) == 3
            assert len(board.jobs) <= 5
        assert await board.find("jnever") is None
        for wild in ("*", "jold1.>", ">", "a b"):  # never a filter over other jobs' events
            assert await board.find(wild) is None
    finally:
        await board.stop()


async def test_an_old_finished_job_is_read_by_id(
    streams: Settings, nc: NATS, serve_gateway: Any
) -> None:
    await _history(nc, streams, 40)
    async with serve_gateway(streams) as base, httpx.AsyncClient(base_url=base) as http:
        r = await http.get("/v1/jobs/jold7")
        assert r.status_code == 200
        body = r.json()
        assert body["status"] == "completed" and body["output"] == {"text": "jold7"}
        assert body["model"] == "echo" and body["seq"] is not None
        r = await http.get("/v1/jobs/jold8/result")
        assert r.status_code == 200 and r.json()["output"] == {"text": "jold8"}
        r = await http.get("/v1/jobs/jold9/result?wait=5")
        assert r.status_code == 200 and r.json()["output"] == {"text": "jold9"}
        r = await http.get("/v1/jobs/jold10/events")
        events = _sse(r.text)
        assert [name for name, _ in events] == ["claimed", "started", "completed"]
        ids = [int(i) for _, i in events]
        assert ids == sorted(ids)
        r = await http.get("/v1/jobs/jold10/events", headers={"Last-Event-ID": str(ids[0])})
        assert [name for name, _ in _sse(r.text)] == ["started", "completed"]
        assert (await http.get("/v1/jobs/jnope")).status_code == 404


async def test_jobs_older_than_the_gateway_queued_or_running_are_found(
    streams: Settings, nc: NATS, serve_gateway: Any
) -> None:
    queued_seq = await submit(nc, streams, job("queued", model="nobody-serves-this"))
    running_seq = await submit(nc, streams, job("running"))
    await _lifecycle(nc, streams, "jrunning", running_seq, end=False)
    await _history(nc, streams, 10)
    async with serve_gateway(streams) as base, httpx.AsyncClient(base_url=base) as http:
        r = await http.get("/v1/jobs/jqueued")
        assert r.status_code == 200
        assert r.json()["status"] == "queued" and r.json()["seq"] == queued_seq
        r = await http.get("/v1/jobs/jrunning")
        assert r.status_code == 200 and r.json()["status"] == "running"
        waiting = asyncio.ensure_future(http.get("/v1/jobs/jrunning/result?wait=20"))
        # The wait is taken before the outcome is stored, or after it:
        done = JobCompleted(
            job_id="jrunning", worker_id="w1", attempt=1, output={"text": "ok"}, duration_s=0
        )
        subject = streams.subjects.job_event("jrunning", "completed", "w1")
        await nc.jetstream().publish(subject, encode(done, source="test"))
        r = await waiting  # either way it resolves on the terminal event in the log
        assert r.status_code == 200 and r.json()["output"] == {"text": "ok"}


async def test_the_job_list_pages_through_the_stream(
    streams: Settings, nc: NATS, serve_gateway: Any
) -> None:
    await _history(nc, streams, 23)
    await submit(nc, streams, job("q", model="nobody-serves-this"))
    async with serve_gateway(streams) as base, httpx.AsyncClient(base_url=base) as http:
        seen: list[str] = []
        cursor = None
        for _ in range(10):
            url = "/v1/jobs?limit=7" + (f"&cursor={cursor}" if cursor else "")
            page = (await http.get(url)).json()
            seen += [j["id"] for j in page["jobs"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen[0] == "jq" and len(seen) == 24 and len(set(seen)) == 24
        assert seen[1:] == [f"jold{i}" for i in reversed(range(23))]
        done = (await http.get("/v1/jobs?status=completed&limit=500")).json()
        assert len(done["jobs"]) == 23 and done["next_cursor"] is None
        queued = (await http.get("/v1/jobs?status=queued")).json()
        assert [j["id"] for j in queued["jobs"]] == ["jq"]


async def test_two_gateways_agree_without_talking(
    streams: Settings, nc: NATS, serve_gateway: Any
) -> None:
    await _history(nc, streams, 5)
    async with serve_gateway(streams) as one, serve_gateway(streams) as two:
        seq = await submit(nc, streams, job("fresh"))
        await _lifecycle(nc, streams, "jfresh", seq)
        for job_id in ("jold2", "jfresh"):
            bodies = []
            for base in (one, two):
                async with httpx.AsyncClient(base_url=base) as http:

                    async def done(http: httpx.AsyncClient = http, job_id: str = job_id) -> Any:
                        r = await http.get(f"/v1/jobs/{job_id}")
                        return r.json() if r.json().get("status") == "completed" else None

                    bodies.append(await until(done, timeout=10))
            assert bodies[0] == bodies[1]


async def test_the_fleet_starts_from_each_workers_newest_events(
    streams: Settings, nc: NATS
) -> None:
    """Pings before the recent window are not folded one by one: the fleet starts from each
    worker subject's newest message before it (registration, last ping), then folds the window."""
    js = nc.jetstream()
    now = datetime.now(UTC)
    reg = WorkerRegistered(
        worker_id="w1",
        pools=["standard"],
        models=["echo"],
        backend="echo",
        concurrency=2,
        heartbeat_interval_s=1.0,
    )
    events: list[Any] = [reg] + [
        WorkerHeartbeat(worker_id="w1", n=n, healthy=True, interval_s=1.0, in_flight=0)
        for n in range(1, 40)
    ]
    for i, ev in enumerate(events):
        name = "registered" if ev is reg else "heartbeat"
        body = encode(ev, source="jetgrid/worker/w1", id=f"e{i}", time=now)
        await js.publish(streams.subjects.worker_event("w1", name), body)
    fleet = Fleet(Bus(nc, streams), streams, recent=5)
    folded: list[str] = []
    fold = fleet.fold
    fleet.fold = lambda subject, data, t: (folded.append(subject), fold(subject, data, t))[1]  # type: ignore[method-assign]
    await fleet.start()
    try:
        await fleet.sync()
        view = fleet.views["w1"]
        assert view.registered and view.models == ("echo",)
        assert view.last_ping is not None and view.last_ping.n == 39
        # The registration and the newest ping before the last 5, then those: not all 40.
        assert len(folded) == 2 + 5
        ping = WorkerHeartbeat(worker_id="w1", n=40, healthy=True, interval_s=1.0, in_flight=0)
        body = encode(ping, source="jetgrid/worker/w1", id="e40", time=now)
        await js.publish(streams.subjects.worker_event("w1", "heartbeat"), body)
        await until(lambda: fleet.views["w1"].last_ping.n == 40)  # type: ignore[union-attr]
    finally:
        await fleet.stop()


async def test_a_waiter_on_a_job_the_board_never_saw_resolves_from_the_log(
    streams: Settings, nc: NATS
) -> None:
    seq = await submit(nc, streams, job("before"))
    await _lifecycle(nc, streams, "jbefore", seq, end=False)
    board = JobBoard(Bus(nc, streams), streams, capacity=1)
    await board.start()
    try:
        waiter = board.waiter("jbefore")  # not cached: claimed and started before the board
        done = JobCompleted(
            job_id="jbefore", worker_id="w1", attempt=1, output={"text": "ok"}, duration_s=0
        )
        subject = streams.subjects.job_event("jbefore", "completed", "w1")
        await nc.jetstream().publish(subject, encode(done, source="test"))
        view = await asyncio.wait_for(waiter, 10)
        assert view.status == "completed" and view.model == "echo" and view.jobs_seq == seq
        assert board.seqs("jbefore") and len(board.seqs("jbefore")) == 3
    finally:
        await board.stop()


async def test_jobs_is_read_from_the_oldest_submission_a_consumer_has_not_acked(
    streams: Settings, nc: NATS
) -> None:
    js = nc.jetstream()
    for i in range(10):
        await submit(nc, streams, job(f"q{i}"))
    sub = await js.pull_subscribe(
        streams.subjects.submit("standard", "echo"),
        "pool-standard-echo",
        stream=streams.streams.jobs,
    )
    reader = await js.pull_subscribe(  # a reader far behind, not a pool: does not count
        streams.subjects.submissions(), "replayer", stream=streams.streams.jobs
    )
    await reader.fetch(1, timeout=5)
    for msg in await sub.fetch(3, timeout=5):
        await msg.ack_sync()  # jq0..jq2 claimed: jq3..jq9 may still be unclaimed
    board = JobBoard(Bus(nc, streams), streams, look_back=2)
    await board.start()
    try:
        await asyncio.wait_for(board.caught_up.wait(), 10)
        assert sorted(board.pending) == [f"jq{i}" for i in range(3, 10)]
        view = await board.find("jq3")
        assert view is not None and view.status == "queued"
    finally:
        await board.stop()
    for msg in await sub.fetch(7, timeout=5):
        await msg.ack_sync()  # every consumer done: only the last `look_back` are read
    board = JobBoard(Bus(nc, streams), streams, look_back=2)
    await board.start()
    try:
        await asyncio.wait_for(board.caught_up.wait(), 10)
        assert sorted(board.pending) == ["jq8", "jq9"]
    finally:
        await board.stop()


async def test_a_filtered_list_stops_short_with_a_cursor_and_misses_nothing(
    streams: Settings, nc: NATS, serve_gateway: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jetgrid.gateway import jobs_api

    monkeypatch.setattr(jobs_api, "LIST_SCAN", 5)
    monkeypatch.setattr(jobs_api, "LIST_CHUNK", 3)
    await submit(nc, streams, job("q1", model="nobody-serves-this"))
    await _history(nc, streams, 12)
    await submit(nc, streams, job("q2", model="nobody-serves-this"))
    await _history(nc, streams, 12, prefix="mid")
    async with serve_gateway(streams) as base, httpx.AsyncClient(base_url=base) as http:
        seen: list[str] = []
        cursor, pages = None, 0
        while pages < 50:
            url = "/v1/jobs?status=queued&limit=1" + (f"&cursor={cursor}" if cursor else "")
            page = (await http.get(url)).json()
            pages += 1
            seen += [j["id"] for j in page["jobs"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == ["jq2", "jq1"] and pages > 2


async def test_events_folded_before_their_submission_are_not_lost(
    streams: Settings, nc: NATS
) -> None:
    """JOBS and JOB_EVENTS are followed by two consumers: a job's lifecycle may reach the board
    before its submission (a fast worker, a lagging JOBS consumer). It is kept and folded when
    the submission arrives, so the job is not left `queued` forever."""
    board = JobBoard(Bus(nc, streams), streams)
    await board.start()
    try:
        await asyncio.wait_for(board.caught_up.wait(), 10)
        await _lifecycle(nc, streams, "jearly", 1)  # the job's events first...
        await board.sync()
        assert board.get("jearly") is None
        assert await submit(nc, streams, job("early")) == 1  # ...then its submission
        await board.sync()
        view = board.get("jearly")
        assert view is not None and view.status == "completed"
        assert view.output == {"text": "jearly"} and view.model == "echo"
        assert len(board.seqs("jearly")) == 3
        assert (await board.waiter("jearly")).status == "completed"
    finally:
        await board.stop()
