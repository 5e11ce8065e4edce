"""No message stops a consumer: hostile messages in every stream, between valid events, on a
real nats-server. Workers (echo backend), the projector, replay, audit, the gateway's folds and
a dead-letter watcher all reach the end of the log; every valid job completes; the read models
equal those of the log without the hostile messages; what cannot be used is recorded once."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from jetgrid.coordinator.settings import Settings
from jetgrid.events import (
    JOB_EVENTS,
    JOBS,
    WORKERS,
    InvalidEvent,
    WorkerHeartbeat,
    decode,
    decode_submission,
    encode,
    now,
)
from jetgrid.projections.fold import check_job_event_speaker, check_worker_message
from tests.e2e.hostile import DEEP, run_consumers
from tests.helpers import job, submit

pytestmark = pytest.mark.integration


async def test_deep_messages_bad_tokens_and_misplaced_events_stop_no_consumer(
    streams: Any, nc: Any, bus: Any, start_worker: Any, outcomes: Any, tmp_path: Path
) -> None:
    s = streams
    js = nc.jetstream()
    await start_worker(concurrency=2)
    hostile: dict[str, set[int]] = {JOBS: set(), JOB_EVENTS: set(), WORKERS: set()}
    await submit(js, s, job(1))
    # 2 KB nested 1,000 deep on the echo subject: the worker pulls it
    hostile[JOBS].add((await js.publish(s.subjects.submit("standard", "echo"), DEEP)).seq)
    # a model token that no model name encodes to (`_65cho` for `echo`): no worker pulls it
    bad_token = "jetgrid.jobs.standard._65cho".replace("jetgrid", s.subjects.prefix, 1)
    body = b'{"model": "echo", "prompt": "x"}'
    hostile[JOBS].add((await js.publish(bad_token, body)).seq)
    hostile[WORKERS].add((await js.publish(s.subjects.worker_event("w9", "heartbeat"), DEEP)).seq)
    hostile[JOB_EVENTS].add(
        (await js.publish(s.subjects.job_event("j1", "completed", "w1"), DEEP)).seq
    )
    # a valid worker event on a job's subject: it is about no job
    beat = WorkerHeartbeat(worker_id="w1", n=0, healthy=True, interval_s=1, in_flight=0)
    on_job = s.subjects.job_event("j1", "started", "w1")
    hostile[JOB_EVENTS].add((await js.publish(on_job, encode(beat, source="x"))).seq)
    await submit(js, s, job(2))
    await outcomes.wait_terminal("j1", "j2", timeout=30)
    assert [outcomes.terminal(j)[0].type for j in ("j1", "j2")] == ["jetgrid.job.completed"] * 2

    got = await run_consumers(s, nc, bus, tmp_path, hostile, ["j1", "j2"])
    assert all(got.consumers.values()), got.consumers
    for stream, seqs in hostile.items():
        assert seqs <= got.recorded.get(stream, set()), (stream, got.recorded)


# -- the property: generated hostile messages in every stream, between valid events ------------

_ids = itertools.count(1)
TRIED: dict[str, int] = {JOBS: 0, JOB_EVENTS: 0, WORKERS: 0}
REACHED: dict[str, int] = {}
T_FAR = "2099-01-01T00:00:00Z"
LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=6)
)
VALUES = st.recursive(
    LEAVES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)
ODD = st.sampled_from(
    ["NaN", "-Infinity", "1e999", "9" * 30, '"\\ud800"', '"x\\udfff"', "[" * 40 + "]" * 40]
)


def envelope(type_: str, data: Any, **over: Any) -> dict[str, Any]:
    env = {"specversion": "1.0", "id": "j1", "source": "nats", "type": type_,
           "time": "2026-01-01T00:00:00Z", "datacontenttype": "application/json",
           "dataversion": 1, "data": data}  # fmt: skip
    env.update(over)
    return env


@st.composite
def hostile_body(draw: st.DrawFn, stream: str, job_id: str) -> bytes:
    """Deep nesting, odd numbers, bad UTF-8, wrong shapes, forged envelopes, colliding ids."""
    kind = draw(st.sampled_from(["deep", "odd", "utf8", "shape", "forged"]))
    if kind == "deep":
        n = draw(st.sampled_from([33, 200, 1000, 20_000]))
        return b'{"model": "echo", "prompt": ' + b"[" * n + b"]" * n + b"}"
    if kind == "utf8":
        return draw(st.sampled_from([b'{"model": "echo", "prompt": "\xff"}', b"\xed\xa0\x80",
                                     b'{"job_id": "\xc3"}', b"\xef\xbb\xbf\xff"]))  # fmt: skip
    if kind == "shape":
        return json.dumps(draw(VALUES), allow_nan=True).encode()
    attempt = {"job_id": job_id, "worker_id": "w1", "attempt": 1}
    forged = draw(
        st.sampled_from(
            [
                envelope("jetgrid.job.completed", {**attempt, "output": 1, "duration_s": 0},
                         id=draw(st.sampled_from([job_id, "seq-1", "invalid:JOBS:1"]))),
                envelope("jetgrid.job.submitted", {"job_id": job_id, "model": "echo",
                         "pool": "standard", "prompt": "x"}, dataversion=99),
                envelope("jetgrid.job.started", attempt, specversion="0.3"),
                envelope("jetgrid.worker.heartbeat", {"worker_id": "w2", "n": 1, "healthy": True,
                         "interval_s": 1, "in_flight": 0}),
                envelope("jetgrid.worker.heartbeat", {"worker_id": "w1", "n": 1, "healthy": True,
                         "interval_s": 1, "in_flight": 0}, time=T_FAR),
                envelope("jetgrid.job.nope", {}, source=""),
                {"model": "echo", "prompt": draw(VALUES), "job_id": job_id, "priority": 7},
            ]
        )
    )  # fmt: skip
    text = json.dumps(forged)
    if kind == "odd":
        text = text[:-1] + f', "odd": {draw(ODD)}}}'
    return text.encode()


@st.composite
def hostile_message(draw: st.DrawFn, s: Settings, jobs: list[str]) -> tuple[str, str, bytes]:
    stream = draw(st.sampled_from([JOBS, JOB_EVENTS, WORKERS]))
    job_id = draw(st.sampled_from(jobs))
    other = draw(st.sampled_from(jobs))
    p = s.subjects.prefix
    if stream == JOBS:
        token = draw(st.sampled_from(["echo", "echo", "_65cho", "_ZZ", "e_63ho", "_e9"]))
        subject = f"{p}.jobs.standard.{token}" + draw(st.sampled_from(["", ".high", ".low"]))
    elif stream == JOB_EVENTS:
        name = draw(st.sampled_from(["completed", "started", "failed", "claimed"]))
        subject = s.subjects.job_event(other, name, draw(st.sampled_from(["w1", "w2"])))
    else:
        subject = s.subjects.worker_event("w1", draw(st.sampled_from(["heartbeat", "registered"])))
    return stream, subject, draw(hostile_body(stream, job_id))


def unusable(s: Settings, stream: str, subject: str, data: bytes) -> bool:
    """True when the fold's own rules refuse the message (so it is hostile, not a valid one)."""
    try:
        if stream == JOBS:
            decode_submission(data, subject=subject, subjects=s.subjects, seq=1, stream_time=now())
            return False
        if stream == WORKERS:
            return isinstance(check_worker_message(s.subjects, subject, data, now(), 60.0), str)
        env = decode(data).at(1, subject)
    except InvalidEvent:
        return True
    if not getattr(env.event, "job_id", None):
        return True
    return check_job_event_speaker(s.subjects, subject, env) is not None


@settings(
    max_examples=15,
    deadline=None,
    database=None,
    derandomize=True,
    phases=[Phase.generate],  # no shrinking: a failure prints its messages as they are
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_generated_hostile_messages_stop_no_consumer(
    data: st.DataObject,
    streams: Settings,
    nc: Any,
    bus: Any,
    start_worker: Any,
    outcomes: Any,
    tmp_path: Path,
) -> None:
    s, js = streams, nc.jetstream()
    # Fixtures live once per test, not per example: one worker pair and one log for all.
    state = getattr(nc, "_hostile", None)
    if state is None:
        await start_worker(concurrency=4, worker_id="w1")
        await start_worker(concurrency=4, worker_id="w2")
        state = nc._hostile = {"hostile": {JOBS: set(), JOB_EVENTS: set(), WORKERS: set()},
                               "valid": []}  # fmt: skip
    hostile: dict[str, set[int]] = state["hostile"]
    valid: list[str] = state["valid"]
    new = [f"jh{next(_ids)}" for _ in range(data.draw(st.integers(2, 5)))]
    messages = data.draw(st.lists(hostile_message(s, list(new)), min_size=20, max_size=80))
    for i, (stream, subject, body) in enumerate(messages):
        if i % 6 == 0 and new:  # valid jobs between the hostile messages
            j = new.pop()
            await submit(js, s, job(j, job_id=j))
            valid.append(j)
        if not unusable(s, stream, subject, body):
            continue
        hostile[stream].add((await js.publish(subject, body)).seq)
        TRIED[stream] += 1
    for j in new:
        await submit(js, s, job(j, job_id=j))
        valid.append(j)
    try:
        await outcomes.wait_terminal(*valid, timeout=60)
    except TimeoutError:
        raise AssertionError(
            {j: outcomes.names(j) for j in valid if not outcomes.terminal(j)}
        ) from None
    for j in valid:
        assert outcomes.terminal(j)[0].type == "jetgrid.job.completed", j

    run = tmp_path / f"run{next(_ids)}"
    run.mkdir()
    got = await run_consumers(s, nc, bus, run, hostile, valid)
    assert all(got.consumers.values()), got.consumers
    for name in got.consumers:
        REACHED[name] = REACHED.get(name, 0) + 1
    # every hostile JOBS message is recorded (the worker or the projector); WORKERS and
    # JOB_EVENTS ones by the projector
    for stream, seqs in hostile.items():
        assert seqs <= got.recorded.get(stream, set()), (stream, seqs - got.recorded[stream])
    print(f"\nhostile messages tried per stream: {TRIED}; valid jobs: {len(valid)}; "
          f"runs in which each consumer reached the end: {REACHED}")  # fmt: skip
