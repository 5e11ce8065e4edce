"""Property: whatever lands on a subject a client may publish to, nothing crashes or stalls,
every bad submission is recorded with a reason, and every valid job around it completes."""

from __future__ import annotations

import asyncio
import itertools
import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nats.errors import MaxPayloadError

from jetgrid.coordinator.bus import Bus
from jetgrid.events import InvalidMessage, JobCancelRequested, JobCompleted, decode
from jetgrid.events.addressing import Speaker
from tests.helpers import job, read_stream, submit, until

pytestmark = pytest.mark.integration

MAX_PAYLOAD = 1024 * 1024  # nats.conf max_payload: 1MB
_ids = itertools.count(1)

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
not_a_string = st.none() | st.booleans() | st.integers() | st.lists(st.integers(), max_size=2)

bad_bodies = st.one_of(
    st.binary(max_size=64).filter(lambda b: not b.strip().startswith(b"{")),  # not JSON objects
    st.text(max_size=40).map(lambda t: ("{" + t).encode()),  # broken JSON
    json_values.filter(lambda v: not isinstance(v, dict)).map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"model": not_a_string, "prompt": json_values}).map(  # wrong types
        lambda d: json.dumps(d).encode()
    ),
    st.fixed_dictionaries({"model": st.just("echo"), "prompt": not_a_string}).map(
        lambda d: json.dumps(d).encode()
    ),
    st.fixed_dictionaries(  # the right envelope around the wrong event
        {
            "specversion": st.just("1.0"),
            "id": st.just("x"),
            "source": st.just("forged"),
            "type": st.sampled_from(["jetgrid.job.completed", "jetgrid.nope", "io.other"]),
            "time": st.just("2026-01-01T00:00:00Z"),
            "data": st.just({"job_id": "jx", "worker_id": "w", "attempt": 1, "output": 1,
                             "duration_s": 0}),
        }
    ).map(lambda d: json.dumps(d).encode()),
    st.fixed_dictionaries(  # a broken envelope
        {"specversion": st.sampled_from(["0.3", "1.0"]), "type": st.just("jetgrid.job.submitted"),
         "data": json_values}
    ).map(lambda d: json.dumps(d).encode()),
    st.integers(1, 2048).map(lambda k: b"x" * (MAX_PAYLOAD - 512 - k)),  # near max_payload
)  # fmt: skip

items = st.lists(
    st.one_of(
        st.tuples(st.just("valid"), st.sampled_from(["high", "normal", "low"])),
        st.tuples(st.just("bad"), st.sampled_from(["high", "normal", "low"]), bad_bodies),
        st.tuples(st.just("cancel"), st.sampled_from(["valid", "other"]), bad_bodies),
        st.tuples(st.just("oversized"), st.sampled_from(["submit", "cancel"])),
    ),
    min_size=1,
    max_size=10,
)


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batch=items)
async def test_bad_messages_on_client_subjects(
    batch, streams, nc, start_worker, outcomes, gateway
) -> None:
    s = streams
    js = nc.jetstream()
    # Fixtures live once per test, not per example: start the worker with the first example.
    if not hasattr(nc, "_bad_input_worker"):
        nc._bad_input_worker = await start_worker(concurrency=4)  # type: ignore[attr-defined]
    agent = nc._bad_input_worker  # type: ignore[attr-defined]
    valid: dict[str, object] = {}
    bad_seqs: list[int] = []
    last_valid = None
    for item in batch:
        kind = item[0]
        if kind == "valid":
            j = job(f"v{next(_ids)}", priority=item[1])
            await submit(js, s, j)
            valid[j.job_id] = j
            last_valid = j.job_id
        elif kind == "bad":
            subject = s.subjects.submit("standard", "echo", item[1])
            bad_seqs.append((await js.publish(subject, item[2])).seq)
        elif kind == "cancel":
            target = last_valid if item[1] == "valid" and last_valid else f"x{next(_ids)}"
            await js.publish(s.subjects.job_event(target, "cancel_requested"), item[2])
        else:
            subject = (
                s.subjects.submit("standard", "echo")
                if item[1] == "submit"
                else s.subjects.job_event("j0", "cancel_requested")
            )
            with pytest.raises(MaxPayloadError):  # refused by the client: never stored
                await js.publish(subject, b"x" * (MAX_PAYLOAD + 1))
    await outcomes.wait_terminal(*valid, timeout=30)
    for job_id, j in valid.items():
        done = outcomes.terminal(job_id)[0].event
        assert isinstance(done, JobCompleted) and done.output["response"] == j.prompt  # type: ignore[attr-defined]

    async def recorded() -> bool:
        found = {
            decode(m.data).event.seq
            for m in await read_stream(js, s.streams.invalid, s.subjects.invalid("JOBS"))
        }
        return set(bad_seqs) <= found

    await until(recorded, timeout=30, every=0.2)
    for m in await read_stream(js, s.streams.invalid):
        record = decode(m.data).event
        assert isinstance(record, InvalidMessage) and record.reason and record.stream == "JOBS"
    # nothing crashed or stalled: the worker still runs and still honours a real cancel
    assert agent.ready.is_set() and agent.bus is not None and agent.bus.is_connected
    probe = job(f"probe{next(_ids)}", prompt=None, input={"sleep": 30})
    await submit(js, s, probe)
    await outcomes.wait_for(lambda: "started" in outcomes.names(probe.job_id))
    await Bus(nc, s).store(JobCancelRequested(job_id=probe.job_id), Speaker.service("test"))
    await outcomes.wait_terminal(probe.job_id)
    assert outcomes.terminal(probe.job_id)[0].type == "jetgrid.job.cancelled"
    # and the gateway still answers from its read model
    async with httpx.AsyncClient(base_url=gateway) as http:
        r = await http.get(f"/v1/jobs/{probe.job_id}")
        for _ in range(100):
            if r.json().get("status") == "cancelled":
                break
            await asyncio.sleep(0.05)
            r = await http.get(f"/v1/jobs/{probe.job_id}")
    assert r.json()["status"] == "cancelled"


def test_bodies_strategy_is_never_a_valid_job() -> None:
    """Guard for the property above: the 'bad' bodies really are bad."""
    from jetgrid.events import InvalidEvent, Subjects, decode_submission, now

    @settings(max_examples=200, deadline=None)
    @given(bad_bodies)
    def check(body: bytes) -> None:
        with pytest.raises(InvalidEvent):
            decode_submission(
                body, subject=Subjects().submit("standard", "echo"), subjects=Subjects(),
                seq=1, stream_time=now(),
            )  # fmt: skip

    check()
