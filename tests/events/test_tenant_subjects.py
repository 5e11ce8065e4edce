"""Tenant queues on NATS: the subject form, the consumer names, and what a submission on a
tenant subject decodes to (the subject names the tenant; a payload cannot claim another)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from jetgrid.coordinator.consumers import consumer_name, pool_consumer
from jetgrid.events import InvalidEvent, JobSubmitted, decode_submission, encode
from jetgrid.events.addressing import Speaker, address
from jetgrid.events.errors import InvalidSubject
from jetgrid.events.subjects import Subjects, decode_tenant, encode_tenant

S = Subjects("jg")
NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("priority", ["high", "normal", "low"])
@pytest.mark.parametrize("tenant", ["ci", "team.a b", "ü", "x" * 128])
def test_tenant_subjects_round_trip(priority: str, tenant: str) -> None:
    subject = S.submit("standard", "llama3.2:1b", priority, tenant)
    assert subject == f"jg.jobs.standard.llama3_2E2_3A1b.{priority}.{encode_tenant(tenant)}"
    assert S.parse_submit_tenant(subject) == ("standard", "llama3.2:1b", priority, tenant)
    assert S.parse_submit(subject) == ("standard", "llama3.2:1b")
    assert decode_tenant(encode_tenant(tenant)) == tenant


def test_older_forms_parse_as_the_shared_queue() -> None:
    assert S.parse_submit_tenant("jg.jobs.standard.echo") == ("standard", "echo", "normal", None)
    assert S.parse_submit_tenant("jg.jobs.standard.echo.low") == ("standard", "echo", "low", None)
    assert S.submit("standard", "echo", "normal", None) == "jg.jobs.standard.echo"
    assert {"jg.jobs.*.*.*.*", "jg.jobs.*.*.*.*.*"} <= set(S.submission_subjects())


@pytest.mark.parametrize(
    "subject",
    ["jg.jobs.standard.echo.urgent.ci", "jg.jobs.standard.echo.normal._61", "jg.jobs.s.echo.a.b.c"],
)
def test_bad_tenant_subjects_are_refused(subject: str) -> None:
    with pytest.raises(InvalidSubject):
        S.parse_submit_tenant(subject)


def test_tenant_names_must_fit() -> None:
    for bad in ("", "x" * 129):
        with pytest.raises(InvalidSubject, match="1-128"):
            encode_tenant(bad)


def test_each_tenant_queue_has_its_own_consumer() -> None:
    names = {
        consumer_name("standard", "m", p, t)
        for p in ("high", "normal", "low")
        for t in (None, "a", "b", "_h")
    }
    assert len(names) == 12
    assert consumer_name("standard", "m", "high", "ci") == "pool-standard-m_high_Tci"
    spec = pool_consumer(
        S, "JOBS", "standard", "m", ack_wait_s=30, max_deliver=6, max_ack_pending=10, tenant="ci"
    )
    assert spec.filter_subject == "jg.jobs.standard.m.normal.ci"
    assert spec.tenant == "ci" and spec.name == "pool-standard-m_Tci"
    shared = pool_consumer(S, "JOBS", "standard", "m", ack_wait_s=30, max_deliver=6,
                           max_ack_pending=10)  # fmt: skip
    assert shared.tenant is None and shared.filter_subject == "jg.jobs.standard.m"


def test_a_job_with_a_tenant_is_addressed_to_its_queue() -> None:
    job = JobSubmitted(job_id="j1", model="m", pool="standard", prompt="p", tenant="ci")
    assert address(job, S, Speaker.service("gw")).subject == "jg.jobs.standard.m.normal.ci"


def _decode(data: bytes, subject: str) -> JobSubmitted:
    env = decode_submission(data, subject=subject, subjects=S, seq=7, stream_time=NOW)
    assert isinstance(env.event, JobSubmitted)
    return env.event


def test_a_bare_submission_takes_its_tenant_and_submitter_from_the_subject() -> None:
    job = _decode(
        json.dumps({"model": "m", "prompt": "hi"}).encode(), S.submit("p", "m", "low", "ci")
    )
    assert (job.tenant, job.submitter, job.priority, job.pool) == ("ci", "ci", "low", "p")


def test_a_payload_cannot_claim_another_tenant_than_its_subject() -> None:
    body = json.dumps({"model": "m", "prompt": "hi", "tenant": "other"}).encode()
    with pytest.raises(InvalidEvent, match="'tenant'"):
        _decode(body, S.submit("p", "m", "normal", "ci"))
    with pytest.raises(InvalidEvent, match="'tenant'"):
        _decode(body, S.submit("p", "m"))  # the shared queue is no tenant's
    job = JobSubmitted(job_id="j1", model="m", pool="p", prompt="p", tenant="other")
    data = encode(job, source="x", id="j1")
    with pytest.raises(InvalidEvent, match="'tenant'"):
        _decode(data, S.submit("p", "m", "normal", "ci"))
    assert _decode(data, S.submit("p", "m", "normal", "other")).tenant == "other"


def test_affinity_lanes_are_a_last_token_of_a_tenant_queue() -> None:
    subject = S.submit("standard", "m", "normal", "ci", 7)
    assert subject == "jg.jobs.standard.m.normal.ci.7"
    assert S.parse_submit_lane(subject) == ("standard", "m", "normal", "ci", 7)
    assert S.parse_submit_tenant(subject) == ("standard", "m", "normal", "ci")
    assert consumer_name("standard", "m", "normal", "ci", 7) == "pool-standard-m_Tci_L7"
    for bad in ("jg.jobs.standard.m.normal.ci.07", "jg.jobs.standard.m.normal.ci.x",
                "jg.jobs.standard.m.normal.ci.1000"):  # fmt: skip
        with pytest.raises(InvalidSubject):
            S.parse_submit_lane(bad)
    with pytest.raises(InvalidSubject, match="needs a tenant"):
        S.submit("standard", "m", "normal", None, 1)
    body = json.dumps({"model": "m", "prompt": "hi"}).encode()
    assert _decode(body, subject).lane == 7
    with pytest.raises(InvalidEvent, match="'lane'"):
        _decode(json.dumps({"model": "m", "prompt": "hi", "lane": 3}).encode(), subject)
