"""The live feed's rules without a server: whose chunks count, when held chunks are released,
and what happens to a client that reads too slowly."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from jetgrid.coordinator.settings import Settings
from jetgrid.events import Envelope, JobClaimed, JobCompleted, JobRetrying, decode, encode
from jetgrid.gateway import live
from jetgrid.gateway.chunks import Chunk, parse_chunk
from jetgrid.gateway.live import LiveFeed, holder
from jetgrid.projections.jobs import JobView, apply

S = Settings()
SUBJ = S.subjects


@dataclass
class Msg:
    subject: str
    data: bytes


@dataclass
class Board:
    """What the feed reads of the job board: views by id, and its taps."""

    jobs: dict[str, JobView] = field(default_factory=dict)
    taps: list[Any] = field(default_factory=list)
    folded: dict[str, list[int]] = field(default_factory=dict)
    held: dict[str, int] = field(default_factory=dict)

    def get(self, job_id: str) -> JobView | None:
        return self.jobs.get(job_id)

    def seqs(self, job_id: str) -> list[int]:
        return list(self.folded.get(job_id, ()))

    def hold(self, job_id: str) -> None:
        self.held[job_id] = self.held.get(job_id, 0) + 1

    def release(self, job_id: str) -> None:
        self.held[job_id] -= 1

    def fold(self, seq: int, name: str, event: Any, worker: str | None = None) -> None:
        subject = SUBJ.job_event(event.job_id, name, worker)
        env: Envelope = decode(encode(event, source="t")).at(seq, subject)
        self.jobs[event.job_id] = apply(self.jobs.get(event.job_id), env)
        self.folded.setdefault(event.job_id, []).append(seq)
        for tap in self.taps:
            tap(event.job_id, seq, subject, env)


def chunk(job: str, worker: str, text: str, attempt: int = 1) -> Msg:
    body = {"job_id": job, "attempt": attempt, "i": 0, "text": text}
    return Msg(SUBJ.tokens(job, worker), json.dumps(body).encode())


def claimed(job: str, worker: str, attempt: int = 1) -> JobClaimed:
    return JobClaimed(job_id=job, worker_id=worker, attempt=attempt, jobs_seq=1)


def drain(q: asyncio.Queue[Any]) -> list[Any]:
    out = []
    while not q.empty():
        out.append(q.get_nowait())
    return out


@pytest.fixture
def board() -> Board:
    return Board()


@pytest.fixture
def feed(board: Board) -> LiveFeed:
    return LiveFeed(None, board, S)  # type: ignore[arg-type]  # no bus: nothing here reads NATS


def test_holder_is_the_claiming_worker_and_attempt_while_it_runs() -> None:
    assert holder(None) is None
    assert holder(JobView("j", status="queued", worker_id="w1", attempts=1)) is None
    assert holder(JobView("j", status="claimed", worker_id="w1", attempts=2)) == ("w1", 2)
    assert holder(JobView("j", status="running", worker_id="w1", attempts=1)) == ("w1", 1)
    assert holder(JobView("j", status="completed", worker_id="w1", attempts=1)) is None


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"[" * 5000,  # deep nesting: no RecursionError escapes
        b"[]",
        b'{"job_id": "other", "attempt": 1, "text": "x"}',
        b'{"job_id": "j", "attempt": "1", "text": "x"}',
        b'{"job_id": "j", "attempt": true, "text": "x"}',
        b'{"job_id": "j", "attempt": 1, "text": 5}',
        b'{"job_id": "j", "text": "x"}',
        b"\xff\xfe",
    ],
)
def test_anything_but_a_chunk_of_this_job_is_no_chunk(data: bytes) -> None:
    assert parse_chunk(data, "j", "w") is None


def test_a_chunk_is_its_attempt_and_text() -> None:
    got = parse_chunk(b'{"job_id": "j", "attempt": 2, "i": 0, "text": "hi"}', "j", "w")
    assert got == Chunk("w", 2, 0, "hi")


async def test_only_the_holders_chunks_reach_listeners(board: Board, feed: LiveFeed) -> None:
    board.fold(1, "claimed", claimed("j", "w1"), "w1")
    lst = feed.listen("j", after=1)
    await feed._on_token(chunk("j", "w2", "forged"))
    await feed._on_token(chunk("j", "w1", "old attempt", attempt=0))
    await feed._on_token(chunk("j", "w1", "real"))
    await feed._on_token(Msg(f"{SUBJ.prefix}.tokens.j", b'{"job_id": "j", "text": "bare"}'))
    assert drain(lst.queue) == [("token", Chunk("w1", 1, 0, "real"))]


async def test_chunks_before_the_claim_wait_for_it(board: Board, feed: LiveFeed) -> None:
    lst = feed.listen("j")
    await feed._on_token(chunk("j", "w2", "forged"))
    await feed._on_token(chunk("j", "w1", "early"))
    assert drain(lst.queue) == []
    board.fold(1, "claimed", claimed("j", "w1"), "w1")
    items = drain(lst.queue)
    assert items[0][0] == "event" and items[0][1][:2] == (1, "claimed")
    assert items[1:] == [("token", Chunk("w1", 1, 0, "early"))]


async def test_a_retry_hands_the_stream_to_the_next_attempt(board: Board, feed: LiveFeed) -> None:
    board.fold(1, "claimed", claimed("j", "w1"), "w1")
    lst = feed.listen("j", events=False)
    board.fold(
        2,
        "retrying",
        JobRetrying(job_id="j", worker_id="w1", attempt=1, reason="x", delay_s=0),
        "w1",
    )
    await feed._on_token(chunk("j", "w1", "late"))
    board.fold(3, "claimed", claimed("j", "w2", attempt=2), "w2")
    await feed._on_token(chunk("j", "w1", "late again"))
    await feed._on_token(chunk("j", "w2", "second", attempt=2))
    assert drain(lst.queue) == [("token", Chunk("w2", 2, 0, "second"))]


async def test_history_and_live_events_neither_gap_nor_repeat(board: Board, feed: LiveFeed) -> None:
    board.fold(1, "claimed", claimed("j", "w1"), "w1")
    board.fold(2, "started", claimed("j", "w1"), "w1")  # any event shape: only seqs matter
    lst = feed.listen("j", after=1)
    assert lst.history == [2] and lst.after == 2
    done = JobCompleted(job_id="j", worker_id="w1", attempt=1, output={}, duration_s=0)
    board.fold(3, "completed", done, "w1")
    (item,) = drain(lst.queue)
    seq, name, frame = item[1]
    assert (seq, name) == (3, "completed") and frame.startswith(b"id: 3\nevent: completed\n")


async def test_a_client_that_reads_too_slowly_is_dropped(
    board: Board, feed: LiveFeed, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live, "MAX_QUEUED", 3)
    board.fold(1, "claimed", claimed("j", "w1"), "w1")
    slow = feed.listen("j", after=1)
    for i in range(5):
        await feed._on_token(chunk("j", "w1", f"t{i}"))
    assert drain(slow.queue) == [
        *(("token", Chunk("w1", 1, 0, f"t{i}")) for i in range(3)),
        ("gone", None),
    ]
    assert slow.gone and feed.count == 0


async def test_chunks_of_a_job_nobody_follows_are_not_kept(board: Board, feed: LiveFeed) -> None:
    await feed._on_token(chunk("j", "w1", "x"))
    lst = feed.listen("j")
    feed.close(lst)
    feed.close(lst)  # idempotent
    await feed._on_token(chunk("j", "w1", "y"))
    assert feed._pending == {} and feed.count == 0
