"""Jobs for tests: made with defaults, submitted as any client would, read back as views."""

from __future__ import annotations

from typing import Any

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from jetgrid.coordinator.settings import Settings
from jetgrid.events import JobSubmitted, decode, decode_submission, encode
from jetgrid.events.addressing import Speaker, address
from jetgrid.projections.jobs import JobView, apply
from tests.helpers.streams import read_stream

TEST = Speaker.service("test")


def job(i: int | str, **kw: Any) -> JobSubmitted:
    """Job ``j<i>`` for the echo model in pool standard, prompt ``p<i>`` unless the fields given
    say otherwise (a `prompt` or an `input`)."""
    fields: dict[str, Any] = dict(job_id=f"j{i}", model="echo", pool="standard")
    fields.update(kw)
    if "prompt" not in fields and "input" not in fields:
        fields["prompt"] = f"p{i}"
    return JobSubmitted(**fields)


async def submit(conn: NATS | JetStreamContext, s: Settings, *jobs: JobSubmitted) -> int:
    """Store `jobs` on JOBS as a client would (subject and Nats-Msg-Id by events.addressing);
    the JOBS sequence of the last one."""
    js = conn.jetstream() if isinstance(conn, NATS) else conn
    seq = 0
    for j in jobs:
        addr = address(j, s.subjects, TEST)
        body = encode(j, source=TEST.source, id=addr.msg_id)
        seq = (await js.publish(addr.subject, body, headers={"Nats-Msg-Id": addr.msg_id})).seq
    return seq


async def job_views(js: JetStreamContext, s: Settings) -> dict[str, JobView]:
    """The read model: JOBS then JOB_EVENTS folded with the job reducer."""
    views: dict[str, JobView] = {}
    for m in await read_stream(js, s.streams.jobs):
        md = m.metadata
        try:
            env = decode_submission(
                m.data, subject=m.subject, subjects=s.subjects,
                seq=md.sequence.stream, stream_time=md.timestamp,
            )  # fmt: skip
        except Exception:
            continue
        views[env.event.job_id] = apply(views.get(env.event.job_id), env)
    for m in await read_stream(js, s.streams.job_events):
        try:
            env = decode(m.data).at(m.metadata.sequence.stream, m.subject)
        except Exception:
            continue
        jid = env.event.job_id
        views[jid] = apply(views.get(jid), env)
    return views
