"""CPU per job of the gateway's live fold, and of a whole submit-and-wait request, without a
server: steadier than bench/gateway.py, whose figures move by 20-30 % between runs here.

The fold (default): encodes N jobs' events as the gateway and a worker store them (a
submission, then `completed` carrying its run's claim, as a worker says a short job; with
`--started`, a `started` with the claim before a plain `completed`, as for a long one), wraps
each in a JetStream message with a real ``$JS.ACK`` reply subject and ``Nats-Msg-Id``, and
feeds them to a `JobBoard` with the gateway's own observers (metrics, the queue index) and stall
tap, timing the process's CPU.

`--request`: the same jobs through the gateway's ASGI app as ``POST /v1/jobs?wait=30`` (Guard,
Starlette, the real handler and answer), `--inflight` at once, with NATS replaced by a queue:
`Bus.store` encodes and hands the envelope to the board's OwnSubmissions as the real one does,
then the submission and its `completed` are fed to the board as JetStream deliveries. What it
leaves out is uvicorn, nats-py and the sockets; what it counts besides the gateway's own work is
building and encoding each `completed` (the worker's part, about a tenth of the figure).

Run it against another version's tree with ``PYTHONPATH=DIR`` (e.g. ``git archive main | tar
-x -C DIR``), alternating, for an A/B.

    .venv/bin/python bench/gateway_fold.py [--jobs 5000] [--started]
    .venv/bin/python bench/gateway_fold.py --request [--jobs 3000] [--inflight 16] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import time
import uuid
from collections import deque
from collections.abc import MutableMapping
from datetime import UTC, datetime
from typing import Any

from nats.aio.msg import Msg

from jetgrid.coordinator.bus import Stored
from jetgrid.coordinator.settings import Settings
from jetgrid.events import Envelope, JobCompleted, JobStarted, JobSubmitted, encode
from jetgrid.events.addressing import Speaker, address
from jetgrid.events.base import Event
from jetgrid.events.lifecycle import Claim
from jetgrid.gateway.app import Gateway, create_app
from jetgrid.gateway.board import JobBoard
from jetgrid.gateway.stalls_api import StallLog

WORKER = Speaker.worker("bw1", "boot1")


def _msg(stream: str, subject: str, data: bytes, seq: int, msg_id: str) -> Msg:
    reply = f"$JS.ACK.{stream}.bench.1.{seq}.{seq}.{time.time_ns()}.0"
    headers = {"Nats-Msg-Id": msg_id}
    return Msg(_client=None, subject=subject, reply=reply, data=data, headers=headers)  # type: ignore[arg-type]


def lifecycle(job: JobSubmitted, jobs_seq: int, *, started: bool) -> list[Event]:
    """The events a worker stores for `job` (echo output): a short run's claim rides on its
    `completed`; with `started`, the claim is a `started` of its own."""
    claim = Claim(jobs_seq=jobs_seq, at=datetime.now(UTC))
    done = JobCompleted(
        job_id=job.job_id,
        worker_id="bw1",
        attempt=1,
        output={"text": job.prompt},
        usage={"tokens": 2},
        duration_s=0.001,
        claim=None if started else claim,
    )
    if started:
        return [JobStarted(job_id=job.job_id, worker_id="bw1", attempt=1, jobs_seq=jobs_seq), done]
    return [done]


class _Board:
    """A JobBoard with the gateway's observers and stall tap, fed JetStream messages in order."""

    def __init__(self, settings: Settings, gw: Gateway, bus: Any) -> None:
        self.names, self.subjects = settings.streams, settings.subjects
        self.board = board = JobBoard(bus, settings)
        board.observers.append(gw.metrics.observe)
        board.observers.append(gw.queue.observe)
        board.taps.append(StallLog(board).tap)
        board._start = {self.names.jobs: 1, self.names.job_events: 1}
        board.caught_up.set()
        self.jobs_seq = self.events_seq = 0

    def submission(self, subject: str, data: bytes, msg_id: str) -> tuple[int, Msg]:
        self.jobs_seq += 1
        return self.jobs_seq, _msg(self.names.jobs, subject, data, self.jobs_seq, msg_id)

    def event(self, ev: Event) -> Msg:
        a = address(ev, self.subjects, WORKER)
        self.events_seq += 1
        data = encode(ev, source=WORKER.source, id=a.msg_id)
        return _msg(self.names.job_events, a.subject, data, self.events_seq, a.msg_id)

    def check(self, n: int) -> None:
        board = self.board
        done = sum(1 for e in board.jobs.values() if e.view.status == "completed")
        if board.invalid or done < min(n, board.capacity):
            raise SystemExit(f"the fold went wrong: {board.invalid} invalid, {done} completed")


async def fold(n: int, *, started: bool) -> float:
    """CPU microseconds per job of folding `n` jobs (submission first, then its events)."""
    settings = Settings(subject_prefix="bench")
    gw = Gateway(settings)
    b = _Board(settings, gw, type("NoBus", (), {"js": None})())  # the fold never touches NATS
    gateway = Speaker.service("gateway")
    feed: list[tuple[Msg, list[Msg]]] = []
    for i in range(n):
        job = JobSubmitted(
            job_id=uuid.uuid4().hex, model="echo", pool="standard", prompt=f"hello {i}"
        )
        a = address(job, settings.subjects, gateway)
        seq, sub = b.submission(
            a.subject, encode(job, source=gateway.source, id=a.msg_id), a.msg_id
        )
        feed.append((sub, [b.event(ev) for ev in lifecycle(job, seq, started=started)]))
    t0 = time.process_time()
    for sub, events in feed:
        await b.board._on_submission(sub)
        for msg in events:
            await b.board._on_event(msg)
    spent = time.process_time() - t0
    b.check(n)
    return spent / n * 1e6


async def requests(n: int, inflight: int, rounds: int) -> list[float]:
    """CPU microseconds per ``POST /v1/jobs?wait=30`` of `n` requests, `inflight` at once, per
    round (module docstring)."""
    settings = Settings(subject_prefix="bench")
    logging.getLogger("jetgrid.gateway").setLevel(logging.ERROR)  # "no API keys": not news here
    app = create_app(settings)
    gw: Gateway = app.state.gateway
    queue: deque[tuple[str, bytes, str, JobSubmitted]] = deque()
    wake = asyncio.Event()

    class Bus:
        js = None
        before_store: Any = None

        async def store(self, event: Event, speaker: Speaker, **_: Any) -> Stored:
            a = address(event, settings.subjects, speaker)
            env = Envelope(a.msg_id, speaker.source, datetime.now(UTC), event)
            data = encode(event, source=speaker.source, id=a.msg_id, time=env.time)
            self.before_store(a.subject, data, env)
            assert isinstance(event, JobSubmitted)
            queue.append((a.subject, data, a.msg_id, event))
            wake.set()
            return Stored(settings.streams.jobs, b.jobs_seq + len(queue))

    bus = Bus()
    b = _Board(settings, gw, bus)
    bus.before_store = b.board.own.expect
    gw.bus, gw.board = bus, b.board  # type: ignore[assignment]
    # The fleet's check says yes, as its remembered yes does on a gateway with a worker.
    gw.fleet = type("Served", (), {"served": lambda self, pool, model, window: True})()

    async def deliver() -> None:
        while True:
            await wake.wait()
            wake.clear()
            while queue:
                subject, data, msg_id, job = queue.popleft()
                seq, sub = b.submission(subject, data, msg_id)
                await b.board._on_submission(sub)
                for ev in lifecycle(job, seq, started=False):
                    await b.board._on_event(b.event(ev))

    answers: list[dict[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            answers.append({"status": message["status"]})
        else:
            answers[-1]["body"] = message["body"]

    async def post(i: int) -> None:
        body = json.dumps({"model": "echo", "prompt": f"job {i}"}).encode()
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": "/v1/jobs", "raw_path": b"/v1/jobs",
            "root_path": "", "query_string": b"wait=30", "server": ("127.0.0.1", 8080),
            "client": ("127.0.0.1", 50000), "state": {},
            "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode())],
        }  # fmt: skip

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        await app(scope, receive, send)

    async def batch(first: int, count: int) -> None:
        numbers = iter(range(first, first + count))

        async def one_at_a_time() -> None:
            for i in numbers:
                await post(i)

        await asyncio.gather(*(one_at_a_time() for _ in range(inflight)))

    deliverer = asyncio.create_task(deliver())
    try:
        await batch(0, min(n, 300))  # warm-up
        spent = []
        for r in range(rounds):
            answers.clear()
            t0 = time.process_time()
            await batch((r + 1) * n, n)
            spent.append((time.process_time() - t0) / n * 1e6)
            bad = [a for a in answers if a["status"] != 200 or b'"completed"' not in a["body"]]
            if len(answers) != n or bad:
                raise SystemExit(f"{len(bad)} of {len(answers)} answers were not 200 completed")
    finally:
        deliverer.cancel()
    return spent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=None, help="jobs (default 5000; --request 3000)")
    ap.add_argument("--started", action="store_true", help="a `started` before each outcome")
    ap.add_argument("--request", action="store_true", help="whole POST /v1/jobs?wait=30")
    ap.add_argument("--inflight", type=int, default=16, help="--request: requests at once")
    ap.add_argument("--rounds", type=int, default=5, help="--request: rounds (median shown)")
    args = ap.parse_args()
    if args.request:
        n = args.jobs or 3000
        per = asyncio.run(requests(n, args.inflight, args.rounds))
        rounds = " ".join(f"{x:.0f}" for x in per)
        print(
            f"POST /v1/jobs?wait=30 in-process: {statistics.median(per):.1f} us CPU per request "
            f"(median; rounds {rounds}), {n} requests x {args.rounds}, {args.inflight} at once"
        )
        return
    n = args.jobs or 5000
    us = asyncio.run(fold(n, started=args.started))
    events = 3 if args.started else 2
    print(f"fold: {us:.1f} us CPU per job ({events} events), {n} jobs")


if __name__ == "__main__":
    main()
