"""The gateway NATS user may run the Batch API (files, batch records, line counts) and the
webhook service (the shared consumer, dead-letter records), as `jetgrid up` runs them."""

from __future__ import annotations

import asyncio
from typing import Any

import nats.errors
import pytest
from nats.aio.client import Client as NATS

from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.errors import NotFound
from jetgrid.coordinator.provision import provision_batches
from jetgrid.coordinator.roles import WEBHOOK_CONSUMER
from jetgrid.coordinator.settings import Settings
from jetgrid.events import JetgridError
from jetgrid.events.addressing import Speaker
from jetgrid.gateway.batchstore import BatchRecord, BatchStore, FileInfo, FileStore
from jetgrid.webhooks import WebhookService, serve_webhooks
from tests.helpers import until


async def test_the_gateway_user_runs_the_batch_api_and_the_webhook_service(
    provisioned: Any, admin_nc: NATS
) -> None:
    s: Settings = provisioned.settings("gateway")
    bus = await Bus.connect(s, name="test-gateway-batches")
    try:
        # Before provisioning, the gateway user may not create the consumer: a clear error.
        with pytest.raises(NotFound, match="run `jetgrid provision` as the admin user"):
            await WebhookService(s, bus).run()
        # The service as `jetgrid up` runs it says so too, rather than waiting on without it.
        with pytest.raises(NotFound, match="run `jetgrid provision` as the admin user"):
            await asyncio.wait_for(serve_webhooks(s, asyncio.Event()), 30)
        await provision_batches(admin_nc.jetstream(), s)
        files = FileStore(bus, s)
        info = FileInfo(id="file-x1", owner="open", purpose="batch", filename="a.jsonl",
                        bytes=3, created_at=1)  # fmt: skip
        await files.put(info, b"abc")
        await files.put(info, b"abc")  # replacing a file purges the old chunks
        assert await files.info("file-x1") == info
        assert await files.content("file-x1") == b"abc"
        assert await files.listed() == [info]
        store = BatchStore(bus, s)
        rec = BatchRecord(id="batch_" + "a" * 32, owner="open", endpoint="/v1/completions",
                          input_file_id="file-x1", total=2, created_at=1)  # fmt: skip
        await store.put(rec)
        assert await store.get(rec.id) == rec
        assert await store.owned("open") == [rec.id]
        assert await store.line_done(rec.id, rec.job_id(0), "completed") is None
        assert await store.line_done(rec.id, rec.job_id(1), "failed") == rec
        assert not await store.response_deleted("j1")  # a deleted response's mark
        await store.mark_response_deleted("j1")
        assert await store.response_deleted("j1") and not await store.response_deleted("j2")
        sub = await bus.js.pull_subscribe_bind(WEBHOOK_CONSUMER, stream=s.streams.job_events)
        with pytest.raises(nats.errors.TimeoutError):
            await sub.fetch(1, timeout=0.3)
        await sub.unsubscribe()
        await files.delete("file-x1")  # list and delete, as GET and DELETE /v1/files do
        assert await files.info("file-x1") is None and await files.listed() == []
        assert await files.info("file-x1", deleted=True) == info
        await bus.record_invalid(b"{}", Speaker.service("webhooks"), stream="WEBHOOKS",
                                 subject="https://x", seq=1, reason="gave up")  # fmt: skip
        refused = [e for e in bus.errors.seen if "permission" in e.lower()]
        assert all("consumer.durable.create" in e.lower() for e in refused), refused
    finally:
        await bus.close()


async def test_a_client_cannot_write_a_batch_record(provisioned: Any, admin_nc: NATS) -> None:
    """A batch's webhook is signed with the secret of the record's `key_name`; only gateways
    (and admin) write records, so a NATS client cannot name another key's batch webhook."""
    s: Settings = provisioned.settings("client")
    await provision_batches(admin_nc.jetstream(), s)
    bus = await Bus.connect(s, name="test-client-batches")
    rec = BatchRecord(id="batch_" + "f" * 32, owner="open", key_name="someone-else",
                      endpoint="/v1/completions", input_file_id="file-x1", total=1,
                      created_at=1, webhook="https://attacker.example.com/h")  # fmt: skip
    try:
        with pytest.raises(JetgridError, match="permissions violation"):
            await BatchStore(bus, s).put(rec)
        # Nor by publishing to the bucket's subject directly, skipping the KV client.
        await bus.nc.publish(f"$KV.{s.batches_bucket}.{rec.id}", rec.model_dump_json().encode())
        await bus.nc.flush()
        await until(lambda: [e for e in bus.errors.seen if f"$kv.{s.batches_bucket}".lower()
                             in e.lower()])  # fmt: skip
    finally:
        await bus.close()
    admin = Bus(admin_nc, provisioned.settings("admin"))
    assert await BatchStore(admin, provisioned.settings("admin")).get(rec.id) is None
