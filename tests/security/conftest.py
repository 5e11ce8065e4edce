"""A nats-server started with the real role config (rendered by coordinator.natsconf), per module.

Streams, a pool consumer and the tiers bucket are provisioned as admin, as `jetgrid provision`
and the projector would; tests then connect as each role through Settings, as components do.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from nats.aio.client import Client as NATS
from nats.js.api import KeyValueConfig

from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.consumers import pool_consumer
from jetgrid.coordinator.natsconf import NatsConfig, Secret, render_nats_config
from jetgrid.coordinator.provision import (
    ensure_consumer,
    ensure_snapshot_bucket,
    provision_streams,
)
from jetgrid.coordinator.roles import SERVICE_USERS, Deployment, User, service_user, worker_user
from jetgrid.coordinator.settings import Settings
from jetgrid.events import dead_letter_spec, stream_specs
from jetgrid.natsserver import NatsServer

PREFIX, STREAMS = "sec", "SEC_"
DEPLOYMENT = Deployment(PREFIX, STREAMS)
# w1 may use any pool consumer; w2 only the (standard, echo) one.
WORKERS = {"w1": (), "w2": (("standard", "echo"),)}


@dataclass
class Secured:
    server: NatsServer
    passwords: dict[str, str]
    data: Path

    def settings(self, user: str | None, **changes: object) -> Settings:
        """Settings connecting as `user` (None: anonymous), with short JetStream timeouts."""
        base = Settings(
            nats_url=self.server.url,
            subject_prefix=PREFIX,
            stream_prefix=STREAMS,
            nats_js_timeout_s=0.5,
            heartbeat_interval_s=0.5,
            data_dir=self.data,
        )
        if user is None:
            return base.replace(**changes)
        return base.replace(nats_user=user, nats_password=self.passwords[user], **changes)


def users() -> list[User]:
    return [service_user(r) for r in SERVICE_USERS] + [
        worker_user(w, serves) for w, serves in WORKERS.items()
    ]


def render(passwords: dict[str, str], **cfg: object) -> str:
    pairs = tuple((u, Secret(value=passwords[u.name])) for u in users())
    return render_nats_config(NatsConfig(deployment=DEPLOYMENT, users=pairs, **cfg))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    store = tmp_path_factory.mktemp("secured")
    passwords = {u.name: secrets.token_urlsafe(16) for u in users()}
    conf = store / "nats.conf"
    conf.write_text(render(passwords))
    server = NatsServer(store / "nats", conf=conf, port=0, log_file=store / "nats-server.log")
    server.start()
    yield Secured(server, passwords, store)
    server.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def provisioned(secured: Secured) -> AsyncIterator[Secured]:
    """Streams, the (standard, echo) and (fast, echo) pool consumers, and the tiers bucket."""
    s = secured.settings("admin")
    nc = (await Bus.connect(s, name="test-admin")).nc
    js = nc.jetstream()
    await provision_streams(js, [*stream_specs(s.subjects, s.streams), dead_letter_spec(s.streams)])
    for pool in ("standard", "fast"):
        spec = pool_consumer(
            s.subjects, s.streams.jobs, pool, "echo", ack_wait_s=30, max_deliver=5,
            max_ack_pending=100,
        )  # fmt: skip
        await ensure_consumer(js, spec)
    kv = await js.create_key_value(KeyValueConfig(bucket=DEPLOYMENT.bucket))
    await kv.put("w1", b'{"tier": "full"}')
    await ensure_snapshot_bucket(js, DEPLOYMENT.streams.snapshot_bucket)
    await nc.close()
    yield secured


@pytest.fixture
async def admin_nc(provisioned: Secured) -> AsyncIterator[NATS]:
    nc = (await Bus.connect(provisioned.settings("admin"), name="test-admin")).nc
    yield nc
    await nc.close()
