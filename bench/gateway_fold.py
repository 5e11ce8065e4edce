"""CPU per job of the gateway's live fold, without a server: steadier than bench/gateway.py.

Encodes N jobs' events as the gateway and a worker store them (a submission, `started` with its
claim, `completed` with an output), wraps each in a JetStream message with a real ``$JS.ACK``
reply subject, and feeds them to a `JobBoard` with the gateway's own observers (metrics, the
queue index) and stall tap, timing the process's CPU. Run it against another version's tree
with ``PYTHONPATH=DIR`` (e.g. ``git archive main | tar -x -C DIR``), alternating, for an A/B.

    .venv/bin/python bench/gateway_fold.py [--jobs 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from typing import Any

from nats.aio.msg import Msg

from jetgrid.coordinator.settings import Settings
from jetgrid.events import JobCompleted, JobStarted, JobSubmitted, encode
from jetgrid.events.addressing import Speaker, address
from jetgrid.gateway.app import Gateway
from jetgrid.gateway.board import JobBoard
from jetgrid.gateway.stalls_api import StallLog


class _NoBus:
    js = None  # the fold never touches NATS


def _msg(stream: str, subject: str, data: bytes, seq: int) -> Msg:
    reply = f"$JS.ACK.{stream}.bench.1.{seq}.{seq}.{time.time_ns()}.0"
    return Msg(_client=None, subject=subject, reply=reply, data=data)  # type: ignore[arg-type]


def messages(settings: Settings, n: int) -> tuple[list[Msg], list[Msg]]:
    """(JOBS messages, JOB_EVENTS messages) of `n` echo jobs, two lifecycle events each."""
    names, subjects = settings.streams, settings.subjects
    gateway, worker = Speaker.service("gateway"), Speaker.worker("bw1", "boot1")
    subs: list[Msg] = []
    evs: list[Msg] = []
    for i in range(n):
        job_id = uuid.uuid4().hex
        job = JobSubmitted(
            job_id=job_id, model="echo", pool="standard", prompt=f"hello {i}", submitter="k1"
        )
        a = address(job, subjects, gateway)
        subs.append(
            _msg(names.jobs, a.subject, encode(job, source=gateway.source, id=a.msg_id), i + 1)
        )
        lifecycle: list[Any] = [
            JobStarted(job_id=job_id, worker_id="bw1", attempt=1, jobs_seq=i + 1),
            JobCompleted(
                job_id=job_id,
                worker_id="bw1",
                attempt=1,
                output={"text": f"hello {i}"},
                usage={"tokens": 2},
                duration_s=0.001,
            ),
        ]
        for ev in lifecycle:
            a = address(ev, subjects, worker)
            data = encode(ev, source=worker.source, id=a.msg_id)
            evs.append(_msg(names.job_events, a.subject, data, len(evs) + 1))
    return subs, evs


async def fold(n: int) -> float:
    """CPU microseconds per job of folding `n` jobs (submission first, then its events)."""
    settings = Settings(subject_prefix="bench")
    gw = Gateway(settings)
    board = JobBoard(_NoBus(), settings)  # type: ignore[arg-type]
    board.observers.append(gw.metrics.observe)
    board.observers.append(gw.queue.observe)
    board.taps.append(StallLog(board).tap)
    board._start = {settings.streams.jobs: 1, settings.streams.job_events: 1}
    subs, evs = messages(settings, n)
    t0 = time.process_time()
    for k in range(n):
        await board._on_submission(subs[k])
        await board._on_event(evs[2 * k])
        await board._on_event(evs[2 * k + 1])
    spent = time.process_time() - t0
    completed = sum(1 for e in board.jobs.values() if e.view.status == "completed")
    if board.invalid or completed != len(board.jobs):
        raise SystemExit(f"the fold went wrong: {board.invalid} invalid, {completed} completed")
    return spent / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=5000, help="jobs folded (three events each)")
    args = ap.parse_args()
    us = asyncio.run(fold(args.jobs))
    print(f"fold: {us:.1f} us CPU per job (3 events), {args.jobs} jobs")


if __name__ == "__main__":
    main()
