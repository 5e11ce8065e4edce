"""Webhooks end to end: a job names a URL, the webhook service POSTs its outcome to a real HTTP
receiver on 127.0.0.1 that verifies the Standard Webhooks signature; failed deliveries are
retried, and one that always fails ends on the dead-letter path."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from jetgrid.coordinator import webhooks as wh
from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.provision import provision_batches
from jetgrid.coordinator.settings import Settings
from jetgrid.events import decode
from jetgrid.gateway.auth import hash_key
from jetgrid.gateway.server import EmbeddedServer, wait_started
from jetgrid.webhooks import Delivery, WebhookService
from tests.helpers import until

pytestmark = pytest.mark.integration

SECRET = "whsec_" + base64.b64encode(b"deployment-secret-for-tests-0123").decode()


@dataclass
class Receiver:
    """A webhook receiver: answers `fail_first` deliveries per path with 503, then 200, and
    keeps every delivery with whether its signature verified under `secret`."""

    secret: str
    fail_first: dict[str, int] = field(default_factory=dict)
    got: dict[str, list[tuple[dict[str, str], bytes, bool]]] = field(default_factory=dict)
    url: str = ""

    async def hook(self, request: Request) -> Response:
        path = request.url.path
        body = await request.body()
        headers = dict(request.headers)
        ok = wh.verify(self.secret, headers, body, now=int(time.time()))
        seen = self.got.setdefault(path, [])
        seen.append((headers, body, ok))
        failing = self.fail_first.get(path, 0)
        if failing < 0 or len(seen) <= failing:
            return Response("not now", status_code=503)
        return Response(status_code=204 if ok else 401)


@contextlib.asynccontextmanager
async def receiving(receiver: Receiver) -> AsyncIterator[Receiver]:
    app = Starlette(routes=[Route("/{name}", receiver.hook, methods=["POST"])])
    server = EmbeddedServer(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    task = asyncio.create_task(server.serve())
    try:
        port = await wait_started(server, task)
        receiver.url = f"http://127.0.0.1:{port}"
        yield receiver
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@contextlib.asynccontextmanager
async def webhook_service(settings: Settings) -> AsyncIterator[WebhookService]:
    bus = await Bus.connect(settings, name="test-webhooks")
    await provision_batches(bus.js, settings)
    service = WebhookService(settings, bus)
    task = asyncio.create_task(service.run())
    await asyncio.wait_for(service.ready.wait(), 10)
    try:
        yield service
    finally:
        service.stop()
        await asyncio.wait_for(task, 10)
        await service.http.aclose()
        await bus.close()


def hook_settings(streams: Settings, **more: Any) -> Settings:
    return streams.replace(
        webhook_allow_private=True, webhook_retry_s=0.05, webhook_attempts=3, **more
    )


async def submit(base: str, url: str, headers: dict[str, str] | None = None) -> str:
    async with httpx.AsyncClient(base_url=base, headers=headers) as http:
        body = {"model": "echo", "prompt": "hello hooks", "webhook": url}
        resp = await http.post("/v1/jobs", json=body)
    assert resp.status_code == 202, resp.text
    return str(resp.json()["id"])


async def test_a_job_webhook_is_signed_with_the_keys_secret_and_retried_until_it_lands(
    streams: Settings,
    serve_gateway: Callable[[Settings], Any],
    start_worker: Callable[..., Awaitable[Any]],
) -> None:
    key = "jg_test_key_for_webhooks"
    settings = hook_settings(streams, api_keys=hash_key(key))
    await start_worker()
    receiver = Receiver(wh.key_secret(hash_key(key)), fail_first={"/ok": 2})
    async with (
        receiving(receiver),
        webhook_service(settings),
        serve_gateway(settings) as base,
    ):
        job_id = await submit(
            base, f"{receiver.url}/ok", headers={"Authorization": f"Bearer {key}"}
        )
        await until(lambda: len(receiver.got.get("/ok", [])) >= 3, timeout=30)
    deliveries = receiver.got["/ok"]
    assert len(deliveries) == 3  # two answered 503, the third 204: no fourth
    assert all(ok for _, _, ok in deliveries)  # every attempt verifies with the key's secret
    assert {h["webhook-id"] for h, _, _ in deliveries} == {f"job_{job_id}"}  # one id throughout
    body = json.loads(deliveries[-1][1])
    assert body["type"] == "job.completed"
    assert body["data"]["id"] == job_id and body["data"]["status"] == "completed"
    assert "hello hooks" in json.dumps(body["data"]["output"])
    # The deployment secret does not verify it: the secret is the key's own.
    headers, raw, _ = deliveries[-1]
    assert not wh.verify(SECRET, headers, raw, now=int(headers["webhook-timestamp"]))


async def test_a_delivery_that_always_fails_ends_on_the_dead_letter_path(
    streams: Settings,
    serve_gateway: Callable[[Settings], Any],
    start_worker: Callable[..., Awaitable[Any]],
    bus: Bus,
) -> None:
    settings = hook_settings(streams, webhook_secret=SECRET)
    await start_worker()
    receiver = Receiver(SECRET, fail_first={"/down": -1})
    async with receiving(receiver), webhook_service(settings) as service:
        async with serve_gateway(settings) as base:
            job_id = await submit(base, f"{receiver.url}/down")
        subject = f"{settings.subject_prefix}.invalid.WEBHOOKS"

        async def recorded() -> list[Any]:
            msgs = await bus.messages(settings.streams.invalid, subject=subject)
            return [decode(m.data).event for m in msgs]

        (record,) = await until(recorded, timeout=30)
        assert service.given_up == 1
        async with serve_gateway(settings) as base, httpx.AsyncClient(base_url=base) as http:
            listed = (await http.get("/v1/webhooks/failures")).json()["data"]
        keyed = settings.replace(api_keys=hash_key("jg_someone_else"))
        async with serve_gateway(keyed) as base, httpx.AsyncClient(base_url=base) as http:
            auth = {"Authorization": "Bearer jg_someone_else"}
            others = (await http.get("/v1/webhooks/failures", headers=auth)).json()["data"]
    assert len(receiver.got["/down"]) == 3  # webhook_attempts, then no more
    assert all(ok for _, _, ok in receiver.got["/down"])  # the deployment secret signs
    assert f"job {job_id}" in record.reason and f"{receiver.url}/down" in record.reason
    assert "3 attempt(s)" in record.reason and "HTTP 503" in record.reason
    assert record.headers["webhook-id"] == f"job_{job_id}"
    assert json.loads(base64.b64decode(record.original_b64))["data"]["id"] == job_id
    # The sender reads it back over HTTP; another key does not see it.
    (shown,) = listed
    assert shown["webhook_id"] == f"job_{job_id}" and shown["url"] == f"{receiver.url}/down"
    assert shown["reason"] == record.reason and shown["body"]["data"]["id"] == job_id
    assert others == []


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://127.0.0.1:9/hook", "JETGRID_WEBHOOK_ALLOW_PRIVATE"),
        ("http://169.254.169.254/latest", "non-public address 169.254.169.254"),
        ("ftp://example.com/x", "http:// or https://"),
    ],
)
async def test_a_private_or_bad_webhook_is_refused_at_submit(
    streams: Settings, serve_gateway: Callable[[Settings], Any], url: str, words: str
) -> None:
    async with (
        serve_gateway(streams.replace(webhook_secret=SECRET)) as base,
        httpx.AsyncClient(base_url=base) as http,
    ):
        body = {"model": "echo", "prompt": "x", "webhook": url}
        resp = await http.post("/v1/jobs?queue_unserved=true", json=body)
    assert resp.status_code == 422
    err = resp.json()["error"]
    assert err["field"] == "webhook" and words in err["message"] and url in err["message"]


async def test_a_webhook_with_nothing_to_sign_it_is_refused_at_submit(
    streams: Settings, serve_gateway: Callable[[Settings], Any]
) -> None:
    async with (
        serve_gateway(streams.replace(webhook_allow_private=True)) as base,
        httpx.AsyncClient(base_url=base) as http,
    ):
        body = {"model": "echo", "prompt": "x", "webhook": "http://127.0.0.1:9/h"}
        resp = await http.post("/v1/jobs?queue_unserved=true", json=body)
    assert resp.status_code == 422
    assert "JETGRID_WEBHOOK_SECRET" in resp.json()["error"]["message"]


async def test_a_name_that_resolves_to_a_private_address_is_refused_at_delivery(
    streams: Settings, bus: Bus
) -> None:
    """DNS may change after submit: the service checks the resolved addresses each time."""

    async def rebinding(host: str, port: int) -> list[str]:
        return ["93.184.216.34", "127.0.0.1"]

    service = WebhookService(streams.replace(webhook_secret=SECRET), bus, resolver=rebinding)
    delivery = Delivery("https://hooks.example.com/x", SECRET, "job_j1", b"{}", "job j1")
    status, answer = await service.post(delivery)
    await service.http.aclose()
    assert status is None and "refused" in answer and "127.0.0.1" in answer


async def test_a_delivery_goes_to_the_address_that_was_checked(streams: Settings, bus: Bus) -> None:
    """The service POSTs to the resolved address it checked, naming the URL's host in Host: a
    name that no DNS knows still reaches the receiver its resolver answered with."""
    receiver = Receiver(SECRET)

    async def pinned(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    settings = streams.replace(webhook_secret=SECRET, webhook_allow_private=True)
    async with receiving(receiver):
        port = receiver.url.rsplit(":", 1)[1]
        service = WebhookService(settings, bus, resolver=pinned)
        url = f"http://hooks.jetgrid.invalid:{port}/pin"
        status, _ = await service.post(Delivery(url, SECRET, "job_j2", b"{}", "job j2"))
        await service.http.aclose()
    assert status == 204
    ((headers, _, ok),) = receiver.got["/pin"]
    assert ok and headers["host"] == f"hooks.jetgrid.invalid:{port}"
