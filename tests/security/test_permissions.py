"""The permission matrix, against a real nats-server running the real role config.

For each role, every action its component needs succeeds and every forbidden one is refused;
a refusal surfaces as PermissionDenied naming the refused subject, within the (short) JetStream
timeout, never as a hang.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from click.testing import CliRunner
from nats.aio.client import Client as NATS
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import StreamConfig

from jetgrid.cli import main
from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.errors import NatsUnavailable, PermissionDenied
from jetgrid.coordinator.settings import Settings
from jetgrid.events import JobCompleted, WorkerHeartbeat, encode
from jetgrid.worker.agent import Worker, WorkerOptions
from jetgrid.worker.backends import EchoBackend

BUCKET = "SEC_TIERS"  # the tiers bucket of the deployment in conftest.py (stream prefix SEC_)
SNAPSHOTS = "SEC_SNAPSHOTS"  # its read-model snapshot object store

pytestmark = pytest.mark.integration

P, JOBS, EVENTS = "sec", "SEC_JOBS", "SEC_JOB_EVENTS"
SUBMISSION = json.dumps({"model": "echo", "prompt": "hi"}).encode()


@dataclass
class Ctx:
    bus: Bus
    nc: NATS
    js: JetStreamContext
    admin: JetStreamContext


def _completed(job: str, worker: str) -> bytes:
    return encode(
        JobCompleted(job_id=job, worker_id=worker, attempt=1, output={}, duration_s=0.1), source="t"
    )


def _ping(worker: str) -> bytes:
    hb = WorkerHeartbeat(worker_id=worker, n=0, healthy=True, interval_s=1, in_flight=0,
                         completed=0, failed=0, pools=[], models=[], nvml=False)  # fmt: skip
    return encode(hb, source="t")


async def _read_one(c: Ctx, stream: str, subject: str) -> None:
    sub = await c.js.subscribe(subject, stream=stream, ordered_consumer=True)
    await sub.next_msg(timeout=5)
    await sub.unsubscribe()


async def _pull_ack(c: Ctx, consumer: str, subject: str) -> None:
    await c.admin.publish(subject, SUBMISSION)  # make sure there is a job to take
    sub = await c.js.pull_subscribe_bind(consumer, stream=JOBS)
    msg = (await sub.fetch(1, timeout=2))[0]
    await msg.in_progress()
    await msg.in_progress()  # twice: allow_responses would allow only one reply
    await msg.ack_sync()


async def _snapshot_rw(c: Ctx) -> None:
    """What the projector does with snapshots: replace the object, then read it back."""
    obs = await c.js.object_store(SNAPSHOTS)
    await obs.put("read-models", b"snapshot")
    await obs.put("read-models", b"newer snapshot")  # replacing purges the old chunks
    assert (await obs.get("read-models")).data == b"newer snapshot"


async def _subscribe(c: Ctx, subject: str) -> None:
    """Subscribe; a refused subscription arrives as an -ERR before the flush's PONG."""
    await c.nc.subscribe(subject)
    for _ in range(3):  # round trips to the server; the error callback runs in between
        await c.nc.flush()
        for _ in range(20):
            if c.bus.errors.last_permission:
                raise NatsTimeout
            await asyncio.sleep(0)


async def _publish(c: Ctx, subject: str) -> None:
    """Publish on core NATS; a refused publish arrives as an -ERR before the flush's PONG."""
    await c.nc.publish(subject, b'{"job_id": "j1", "attempt": 1, "i": 0, "text": "x"}')
    for _ in range(3):
        await c.nc.flush()
        for _ in range(20):
            if c.bus.errors.last_permission:
                raise NatsTimeout
            await asyncio.sleep(0)


async def _kv_read(c: Ctx) -> None:
    kv = await c.js.key_value(BUCKET)
    await kv.get("w1")


async def _kv_write(c: Ctx) -> None:
    kv = await c.js.key_value(BUCKET)
    await kv.put("w1", b'{"tier": "none"}')


async def _scratch_stream(c: Ctx) -> None:
    await c.js.add_stream(StreamConfig(name="SEC_SCRATCH", subjects=["scratch.>"]))
    await c.js.delete_stream("SEC_SCRATCH")


# action -> (the subject a refusal names, what to do)
ACTIONS: dict[str, tuple[str, Callable[[Ctx], Awaitable[Any]]]] = {
    "submit a job": (
        f"{P}.jobs.standard.echo",
        lambda c: c.js.publish(f"{P}.jobs.standard.echo", SUBMISSION),
    ),
    "submit a python job": (
        f"{P}.jobs.standard.python",
        lambda c: c.js.publish(f"{P}.jobs.standard.python", SUBMISSION),
    ),
    "request a cancel": (
        f"{P}.job.j1.cancel_requested",
        lambda c: c.js.publish(f"{P}.job.j1.cancel_requested", b"{}"),
    ),
    # A worker's lifecycle events end in its own id; only services speak without one.
    "publish completed as w1": (
        f"{P}.job.j1.completed.w1",
        lambda c: c.js.publish(f"{P}.job.j1.completed.w1", _completed("j1", "w1")),
    ),
    "publish completed as w2": (
        f"{P}.job.j1.completed.w2",
        lambda c: c.js.publish(f"{P}.job.j1.completed.w2", _completed("j1", "w2")),
    ),
    "publish completed as nobody": (
        f"{P}.job.j1.completed",
        lambda c: c.js.publish(f"{P}.job.j1.completed", _completed("j1", "w1")),
    ),
    "publish dead": (f"{P}.job.j1.dead", lambda c: c.js.publish(f"{P}.job.j1.dead", b"{}")),
    "publish dead as w1": (
        f"{P}.job.j1.dead.w1",
        lambda c: c.js.publish(f"{P}.job.j1.dead.w1", b"{}"),
    ),
    "ping as w1": (
        f"{P}.worker.w1.heartbeat",
        lambda c: c.js.publish(f"{P}.worker.w1.heartbeat", _ping("w1")),
    ),
    "ping as w2": (
        f"{P}.worker.w2.heartbeat",
        lambda c: c.js.publish(f"{P}.worker.w2.heartbeat", _ping("w2")),
    ),
    "delete stream JOBS": (f"$JS.API.STREAM.DELETE.{JOBS}", lambda c: c.js.delete_stream(JOBS)),
    "create and delete a stream": (
        "$JS.API.STREAM.CREATE.SEC_SCRATCH",
        _scratch_stream,
    ),
    "read job events": (
        f"$JS.API.CONSUMER.CREATE.{EVENTS}",
        lambda c: _read_one(c, EVENTS, f"{P}.job.*.*"),
    ),
    "pull and ack standard/echo": (
        f"$JS.API.CONSUMER.MSG.NEXT.{JOBS}.pool-standard-echo",
        lambda c: _pull_ack(c, "pool-standard-echo", f"{P}.jobs.standard.echo"),
    ),
    "pull and ack fast/echo": (
        f"$JS.API.CONSUMER.MSG.NEXT.{JOBS}.pool-fast-echo",
        lambda c: _pull_ack(c, "pool-fast-echo", f"{P}.jobs.fast.echo"),
    ),
    "create a durable reading all jobs": (
        f"$JS.API.CONSUMER.CREATE.{JOBS}.snoop.{P}.jobs.>",
        lambda c: c.js.add_consumer(
            JOBS, durable_name="snoop", name="snoop", filter_subject=f"{P}.jobs.>"
        ),
    ),
    "read the tiers bucket": (f"$JS.API.STREAM.INFO.KV_{BUCKET}", _kv_read),
    # Refused at the put, or (for a role that may not even read the bucket) at its lookup.
    "write the tiers bucket": (f"$KV.{BUCKET}.w1|$JS.API.STREAM.INFO.KV_{BUCKET}", _kv_write),
    "write and read snapshots": (f"$JS.API.STREAM.INFO.OBJ_{SNAPSHOTS}", _snapshot_rw),
    "subscribe to the gateway's inbox": (
        "_INBOX_gateway.>",
        lambda c: _subscribe(c, "_INBOX_gateway.>"),
    ),
    "subscribe to job events": (f"{P}.job.*.*", lambda c: _subscribe(c, f"{P}.job.*.*")),
    # Token chunks end in the worker's id too: no worker writes into another's stream.
    "publish tokens as w1": (f"{P}.tokens.j1.w1", lambda c: _publish(c, f"{P}.tokens.j1.w1")),
    "publish tokens as w2": (f"{P}.tokens.j1.w2", lambda c: _publish(c, f"{P}.tokens.j1.w2")),
    "publish tokens as nobody": (f"{P}.tokens.j1", lambda c: _publish(c, f"{P}.tokens.j1")),
    "subscribe to token streams": (
        f"{P}.tokens.*.*",
        lambda c: _subscribe(c, f"{P}.tokens.*.*"),
    ),
    "subscribe to one job's events": (f"{P}.job.j1.>", lambda c: _subscribe(c, f"{P}.job.j1.>")),
}

ALLOWED: dict[str, set[str]] = {
    "admin": set(ACTIONS),
    "gateway": {"submit a job", "submit a python job", "request a cancel", "publish dead",
                "read job events", "read the tiers bucket", "subscribe to job events",
                "subscribe to one job's events", "subscribe to the gateway's inbox",
                "subscribe to token streams"},
    "projector": {"publish dead", "read job events", "read the tiers bucket",
                  "write the tiers bucket", "write and read snapshots"},
    "client": {"submit a job", "request a cancel", "read job events", "subscribe to job events",
               "subscribe to one job's events", "subscribe to token streams"},
    # w1 may use any pool consumer; w2 only (standard, echo). Neither may ping, or say a job
    # event, as the other. Workers publish `dead` (each runs a dead-letter watcher; Msg-Id
    # dedupe makes it one), under their own id too.
    "worker-w1": {"publish completed as w1", "publish dead as w1", "ping as w1",
                  "publish tokens as w1",
                  "pull and ack standard/echo", "pull and ack fast/echo", "read the tiers bucket"},
    "worker-w2": {"publish completed as w2", "ping as w2", "publish tokens as w2",
                  "pull and ack standard/echo",
                  "read the tiers bucket"},
}  # fmt: skip
# The admin's right to delete is shown on a scratch stream; the module's streams stay.
MATRIX = [
    (user, action, action in allowed)
    for user, allowed in ALLOWED.items()
    for action in ACTIONS
    if (user, action) != ("admin", "delete stream JOBS")
]


@pytest.mark.parametrize(("user", "action", "allowed"), MATRIX)
async def test_permission_matrix(
    provisioned: Any, admin_nc: NATS, user: str, action: str, allowed: bool
) -> None:
    bus = await Bus.connect(provisioned.settings(user), name=f"test-{user}")
    nc = bus.nc
    try:
        # A refusal costs one JetStream timeout: keep it short where a refusal is expected.
        ctx = Ctx(bus, nc, nc.jetstream(timeout=2 if allowed else 0.3), admin_nc.jetstream())
        subject, act = ACTIONS[action]
        if allowed:
            await bus.call(act(ctx), action)
            return
        with pytest.raises(PermissionDenied) as refused:
            await asyncio.wait_for(bus.call(act(ctx), action), 5)
        text = str(refused.value)
        assert text.startswith(f"NATS refused to {action}: ")
        # The server's message names the refused subject.
        assert any(f'"{s.lower()}"' in text.lower() for s in subject.split("|")), text
    finally:
        await nc.close()


async def test_a_worker_started_under_another_id_fails_clearly(provisioned: Any) -> None:
    """Worker w2's agent run with w1's credentials stops with PermissionDenied, not a hang."""
    settings: Settings = provisioned.settings("worker-w1")
    agent = Worker(settings, WorkerOptions(pool="standard", models=("echo",), worker_id="w2"),
                   EchoBackend())  # fmt: skip
    with pytest.raises(PermissionDenied, match=r"publish to sec\.worker\.w2\.registered"):
        await asyncio.wait_for(agent.run(), 10)


async def test_a_worker_with_its_own_credentials_runs_jobs(
    provisioned: Any, admin_nc: NATS
) -> None:
    settings: Settings = provisioned.settings("worker-w2")
    agent = Worker(settings, WorkerOptions(pool="standard", models=("echo",), worker_id="w2",
                                           burst=True), EchoBackend())  # fmt: skip
    events = await admin_nc.subscribe(f"{P}.job.*.completed.w2")  # said under its own id
    ack = await admin_nc.jetstream().publish(f"{P}.jobs.standard.echo", SUBMISSION)
    await asyncio.wait_for(agent.run(), 30)
    job = f"seq-{ack.seq}"
    done = []
    while job not in done:
        done.append((await events.next_msg(timeout=10)).subject.split(".")[2])
    assert agent.counters.completed >= 1 and agent.counters.invalid == 0
    assert agent.bus is not None and not agent.bus.errors.seen


@pytest.mark.parametrize("user", [None, "gateway"])
async def test_wrong_or_missing_credentials_are_refused_at_connect(
    provisioned: Any, user: str | None
) -> None:
    settings = provisioned.settings(user)
    if user:
        settings = settings.replace(nats_password="not-the-password")
    with pytest.raises(NatsUnavailable, match="credentials"):
        await Bus.connect(settings, name="test-intruder")


def test_provision_as_anyone_but_admin_is_a_clear_error(provisioned: Any) -> None:
    s: Settings = provisioned.settings("gateway")
    env = {"JETGRID_NATS_URL": s.nats_url, "JETGRID_NATS_USER": "gateway",
           "JETGRID_NATS_PASSWORD": provisioned.passwords["gateway"],
           "JETGRID_SUBJECT_PREFIX": "other", "JETGRID_STREAM_PREFIX": "OTHER_",
           "JETGRID_NATS_JS_TIMEOUT_S": "0.5"}  # fmt: skip
    result = CliRunner().invoke(main, ["provision"], env=env)
    assert result.exit_code == 1
    assert "NATS refused to provision streams (connect as the admin user)" in result.output
    assert "$js.api.stream." in result.output  # the refused subject
