"""A submission the gateway stores itself is folded from the envelope it stored, not decoded
again, only when the very bytes come back on the same subject under the same id; the envelope
is the one decoding would give, and the kept ones are bounded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from jetgrid.coordinator.settings import Settings
from jetgrid.events import Envelope, JobCancelRequested, JobSubmitted, decode_submission, encode
from jetgrid.events.addressing import Speaker, address
from jetgrid.gateway.own import OwnSubmissions
from tests.gateway.conftest import in_process

SETTINGS = Settings(subject_prefix="t")
SUBJECTS = SETTINGS.subjects
GATEWAY = Speaker.service("gateway")
WHEN = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)

JOBS = [
    JobSubmitted(job_id="a1", model="echo", pool="standard", prompt="hi"),
    JobSubmitted(
        job_id="idem-" + "0" * 40,
        model="llama3.2:1b",
        pool="standard",
        kind="chat",
        input={"messages": [{"role": "user", "content": "hé"}], "n": 1.5, "big": 2**53},
        options={"temperature": 0.1},
        priority="high",
        timeout_s=2.5,
        idempotency_key="k",
        submitter="alice",
        start_by=datetime(2030, 1, 1, 12, tzinfo=timezone(timedelta(hours=2))),
        ttl_s=30.0,
        webhook="https://example.com/hook",
        trace_id="0" * 31 + "1",
    ),
    JobSubmitted(
        job_id="t1", model="echo", pool="fair", prompt="x", tenant="acme", lane=3, session="s"
    ),
    JobSubmitted(job_id="t2", model="echo", pool="fair", prompt="x", tenant="acme", priority="low"),
]


def stored(job: Any, time: datetime = WHEN) -> tuple[str, bytes, Envelope]:
    """What Bus.store hands to before_store for `job`."""
    addr = address(job, SUBJECTS, GATEWAY)
    env = Envelope(addr.msg_id, GATEWAY.source, time, job)
    return addr.subject, encode(job, source=GATEWAY.source, id=addr.msg_id, time=time), env


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("job", JOBS, ids=lambda j: j.job_id)
def test_the_kept_envelope_is_the_one_decoding_the_bytes_gives(job: JobSubmitted) -> None:
    own = OwnSubmissions(SUBJECTS)
    subject, data, env = stored(job)
    own.expect(subject, data, env)
    got = own.take(job.job_id, subject, data, 42)
    want = decode_submission(data, subject=subject, subjects=SUBJECTS, seq=42, stream_time=WHEN)
    assert got == want
    assert got.event.model_dump() == want.event.model_dump()
    assert len(own) == 0  # taken: forgotten


def test_any_other_message_is_decoded() -> None:
    own = OwnSubmissions(SUBJECTS)
    job = JOBS[0]
    subject, data, env = stored(job)
    other = data.replace(b'"hi"', b'"ho"')
    for msg_id, subj, body in [
        (job.job_id, subject, other),  # same id and subject, other bytes (a forgery)
        (job.job_id, SUBJECTS.submit("standard", "echo", "high"), data),  # other subject
        ("a2", subject, data),  # other id
        (None, subject, data),  # no id
    ]:
        own.expect(subject, data, env)
        assert own.take(msg_id, subj, body, 1) is None
    own.expect(subject, data, env)
    assert own.take(job.job_id, subject, other, 1) is None
    assert own.take(job.job_id, subject, data, 2) is None  # after a forgery: decoded too


def test_what_decoding_would_refuse_or_change_is_not_kept() -> None:
    own = OwnSubmissions(SUBJECTS)
    derived = JobSubmitted(job_id="seq-9", model="echo", pool="standard", prompt="x")
    cancel = JobCancelRequested(job_id="a1")
    for subject, data, env in [
        stored(derived),  # a derived id: decode_submission refuses it
        stored(JOBS[0], datetime(2026, 1, 2, 3, 4, 5)),  # naive time: decoded as UTC
        stored(JOBS[0], WHEN.astimezone(timezone(timedelta(hours=1)))),  # decoded as UTC
        stored(cancel),  # not a submission
    ]:
        own.expect(subject, data, env)
    subject, data, env = stored(JOBS[0])
    own.expect(SUBJECTS.submit("standard", "other"), data, env)  # the subject's model differs
    own.expect(SUBJECTS.submit("gpu", "echo"), data, env)  # the subject's pool differs
    own.expect(SUBJECTS.submit("fair", "echo", "high", "acme"), *stored(JOBS[3])[1:])
    assert len(own) == 0


def test_kept_submissions_are_bounded_by_count_age_and_failure() -> None:
    clock = Clock()
    own = OwnSubmissions(SUBJECTS, size=3, age_s=10, clock=clock)
    jobs = [
        JobSubmitted(job_id=f"j{i}", model="echo", pool="standard", prompt="x") for i in range(5)
    ]
    for job in jobs:
        own.expect(*stored(job))
    assert len(own) == 3  # the oldest two out
    assert own.take("j0", *stored(jobs[0])[:2], 1) is None
    own.forget("j4")  # its store failed
    assert len(own) == 2
    clock.now += 11
    own.expect(*stored(jobs[0]))  # the two older than age_s leave
    assert len(own) == 1
    assert own.take("j0", *stored(jobs[0])[:2], 1) is not None


async def test_the_board_folds_a_job_the_gateway_stored_without_decoding_it(
    streams: Settings,
) -> None:
    async with in_process(streams) as (gw, http):
        decoded: list[bytes] = []
        decode = gw.board._submission

        def counted(data: bytes, *args: Any) -> Any:
            decoded.append(data)
            return decode(data, *args)

        gw.board._submission = counted
        job = {"model": "ghost:1b", "prompt": "anyone?", "pool": "standard", "id": "mine"}
        r = await http.post("/v1/jobs?queue_unserved=true", json=job)
        assert r.status_code == 202, r.text
        await gw.board.sync()
        view = gw.board.get("mine")
        assert view is not None and view.status == "queued" and view.model == "ghost:1b"
        assert decoded == [] and len(gw.board.own) == 0
        r = await http.get("/v1/jobs/mine")
        assert r.json()["status"] == "queued" and r.json()["seq"] == view.jobs_seq
        assert isinstance(http, httpx.AsyncClient)


async def test_a_submission_whose_store_fails_is_not_kept(streams: Settings) -> None:
    import nats.errors

    async with in_process(streams) as (gw, http):

        async def refuse(*args: Any, **kwargs: Any) -> Any:
            raise nats.errors.TimeoutError

        gw.bus.js.publish = refuse
        r = await http.post(
            "/v1/jobs?queue_unserved=true",
            json={"model": "ghost:1b", "prompt": "x", "pool": "standard", "id": "lost"},
        )
        assert r.status_code == 503, r.text
        assert len(gw.board.own) == 0
