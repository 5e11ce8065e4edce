"""Who a webhook is signed for: a job's `submitter` is whatever its publisher wrote, so a NATS
client that names another API key (and a webhook of its own) gets no delivery signed with that
key's secret; the gateway's proof makes its own submissions' deliveries signed as before."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from jetgrid.coordinator import webhooks as wh
from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.settings import Settings
from jetgrid.events import InvalidMessage, JobSubmitted, decode
from jetgrid.gateway.auth import ApiKey, KeysFileError, hash_key, key_line
from jetgrid.gateway.batchstore import owner_token
from jetgrid.webhooks import UNPROVEN, WebhookService
from tests.gateway.test_webhooks import Receiver, hook_settings, receiving, submit, webhook_service
from tests.helpers import job, until
from tests.helpers.jobs import submit as publish

pytestmark = pytest.mark.integration

KEY = "jg_the_victims_key_for_proofs"
NAME = "env-1"  # the name JETGRID_API_KEYS gives its first hash


async def recorded(bus: Bus, settings: Settings) -> list[InvalidMessage]:
    subject = settings.subjects.invalid("WEBHOOKS")
    msgs = await bus.messages(settings.streams.invalid, subject=subject)
    return [e for e in (decode(m.data).event for m in msgs) if isinstance(e, InvalidMessage)]


async def proof_of(bus: Bus, settings: Settings, job_id: str) -> str:
    """The proof the gateway stored with `job_id`'s submission (anyone who reads JOBS sees it)."""
    for m in await bus.messages(settings.streams.jobs, subject=f"{settings.subject_prefix}.>"):
        event = decode(m.data).event
        if isinstance(event, JobSubmitted) and event.job_id == job_id:
            assert event.webhook_proof is not None
            return event.webhook_proof
    raise AssertionError(f"no submission of {job_id}")


async def test_a_forged_submitter_gets_no_delivery_signed_with_that_keys_secret(
    streams: Settings,
    serve_gateway: Callable[[Settings], Any],
    start_worker: Callable[..., Awaitable[Any]],
    bus: Bus,
) -> None:
    settings = hook_settings(streams, api_keys=hash_key(KEY))
    await start_worker()
    receiver = Receiver(wh.key_secret(hash_key(KEY)))
    async with receiving(receiver), webhook_service(settings) as service:
        # The key's holder, through the gateway: signed with its key's secret, as before.
        async with serve_gateway(settings) as base:
            real = await submit(base, f"{receiver.url}/ok", {"Authorization": f"Bearer {KEY}"})
        await until(lambda: receiver.got.get("/ok"), timeout=30)
        # A NATS client names the key and a webhook of its own: without a proof...
        forged = job("forged", submitter=NAME, webhook=f"{receiver.url}/forged")
        # ...or with the real proof of the key's own job, copied from JOBS onto its own job.
        copied = await proof_of(bus, settings, real)
        tampered = job(
            "tampered", submitter=NAME, webhook=f"{receiver.url}/tampered", webhook_proof=copied
        )
        await publish(bus.js, settings, forged, tampered)
        (records,) = await until(lambda: _settled(receiver, recorded(bus, settings)), timeout=30)
    assert "/forged" not in receiver.got and "/tampered" not in receiver.got  # nothing sent
    ((_, body, ok),) = receiver.got["/ok"]
    assert ok and json.loads(body)["data"]["id"] == real
    by_id = {r.headers["webhook-id"]: r for r in records}
    assert set(by_id) == {"job_jforged", "job_jtampered"}
    for record in by_id.values():
        assert "the submission's submitter is not proven" in record.reason
        assert record.headers["jetgrid-owner"] == UNPROVEN  # no key's listing shows it
    assert service.given_up == 2 and service.delivered == 1


async def _settled(
    receiver: Receiver, records: Awaitable[list[InvalidMessage]]
) -> tuple[list[InvalidMessage]] | None:
    """Both forged jobs recorded, or (the hole) one of them delivered."""
    got = await records
    forged = "/forged" in receiver.got or "/tampered" in receiver.got
    return (got,) if len(got) >= 2 or forged else None


async def test_without_keys_the_deployment_secret_signs_a_nats_submission(
    streams: Settings, start_worker: Callable[..., Awaitable[Any]], bus: Bus
) -> None:
    """No keys: no key's secret to forge; the deployment secret signs whatever is submitted."""
    secret = wh.SECRET_PREFIX + "ZGVwbG95bWVudC1zZWNyZXQtZm9yLXByb29mcy0wMTIz"
    settings = hook_settings(streams, webhook_secret=secret)
    await start_worker()
    receiver = Receiver(secret)
    async with receiving(receiver), webhook_service(settings):
        await publish(
            bus.js, settings, job("open", submitter="anyone", webhook=f"{receiver.url}/o")
        )
        await until(lambda: receiver.got.get("/o"), timeout=30)
    ((_, _, ok),) = receiver.got["/o"]
    assert ok


async def test_the_service_signs_only_for_the_key_that_made_the_proof(
    streams: Settings, bus: Bus, tmp_path: Path
) -> None:
    """A proof holds for the key that made it, not for a key re-created under the same name;
    a keys file that becomes unreadable makes the service retry rather than sign."""
    keys = tmp_path / "api-keys"
    alice = ApiKey(hash_key("jg_alice"), name="alice")
    keys.write_text(key_line(alice) + "\n")
    clock = [1000.0]
    service = WebhookService(streams.replace(api_keys_file=keys), bus, clock=lambda: clock[0])
    hook = "https://hooks.example.com/a"
    secret = wh.key_secret(alice.hash)
    proven = job("p", submitter="alice", webhook=hook,
                 webhook_proof=wh.submitter_proof(secret, "jp", "alice", hook))  # fmt: skip
    assert service.job_signer(proven) == (secret, owner_token(alice.hash), "")
    unproven = proven.model_copy(update={"webhook_proof": None})
    assert service.job_signer(unproven) == (None, UNPROVEN, wh.NOT_PROVEN)
    again = tmp_path / "api-keys.new"  # a new file (a new inode): the ring sees the change
    again.write_text(key_line(ApiKey(hash_key("jg_alice_again"), name="alice")) + "\n")
    again.replace(keys)
    clock[0] += 5
    assert service.job_signer(proven) == (None, UNPROVEN, wh.NOT_PROVEN)
    keys.write_text("not a key line\n")
    clock[0] += 5
    with pytest.raises(KeysFileError):
        service.job_signer(proven)
    await service.http.aclose()
