"""The webhook service: job and batch outcomes POSTed to their webhook URLs, signed, retried.

Every service binds the one durable consumer on the terminal events of JOB_EVENTS
(coordinator.provision.WEBHOOK_CONSUMER), so any number may run and each outcome is handled by
one of them; `jetgrid up` runs one, `jetgrid webhooks` runs one alone. For each terminal event
the service reads the job's submission back from JOBS (the first of the job's events that names
its `jobs_seq`, then a direct get by sequence), and:

- a job with `webhook` gets ``job.<status>`` with the job's outcome;
- a job of a batch marks its line done in the batches bucket (``<batch>.line.<n>``); the event
  that makes the count reach the batch's total sends the batch's webhook, if it has one
  (``batch.completed`` or ``batch.cancelled``).

A job's `submitter` alone never picks a key's secret: with API keys, its delivery is signed with
the key's secret only when the submission carries the gateway's proof for that key
(coordinator.webhooks.proof_holds); otherwise it is not sent, and recorded at once on the
dead-letter path with the reason "the submission's submitter is not proven" (owner
``unproven``, so no key's listing shows it). Without keys the deployment secret signs.

A delivery is one POST (coordinator.webhooks: Standard Webhooks headers, the key's or the
deployment's secret, the same ``webhook-id`` on every attempt), with `webhook_timeout_s`, to a
target checked again against the addresses its host resolves to. A 2xx acks the event; anything
else naks it with coordinator.webhooks.DELIVERY's back-off; at the `webhook_attempts`-th failure
the delivery is recorded on the dead-letter path, a record on ``<prefix>.invalid.WEBHOOKS``
holding the body, the reason (URL, attempts, last answer) and its owner, which the owner reads
with ``GET /v1/webhooks/failures`` (gateway.hooks), and the event is acked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from nats.aio.msg import Msg

from jetgrid.coordinator import webhooks as wh
from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.errors import NotFound
from jetgrid.coordinator.provision import ensure_webhook_consumer
from jetgrid.coordinator.roles import WEBHOOK_CONSUMER
from jetgrid.coordinator.settings import Settings
from jetgrid.coordinator.submissions import submission_at
from jetgrid.events import (
    InvalidEvent,
    JetgridError,
    JobSubmitted,
    decode,
    jobs_seq_of,
)
from jetgrid.events.addressing import Speaker
from jetgrid.gateway.auth import KeyRing, KeysFileError, keys_path
from jetgrid.gateway.batchlines import tally
from jetgrid.gateway.batchstore import BatchStore, batch_of, owner_token
from jetgrid.gateway.hooks import DEAD_STREAM, OWNER_HEADER

log = logging.getLogger("jetgrid.webhooks")

UNPROVEN = "unproven"  # the owner token of records of jobs whose submitter is not proven

Resolve = Callable[[str, int], Awaitable[list[str]]]


@dataclass(frozen=True, slots=True)
class Delivery:
    """One webhook to send: where, with which secret, what body, under which id."""

    url: str
    secret: str | None
    msg_id: str
    body: bytes
    about: str  # "job <id>" or "batch <id>", for records and logs
    owner: str = "open"  # whose delivery it is (gateway.batchstore.owner_token), for records
    refused: str = ""  # why it is not sent at all (recorded at once), if it is not


async def resolve(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port)
    return sorted({str(info[4][0]) for info in infos})


class WebhookService:
    """Delivers webhooks from the shared consumer; `run()` until `stop()`."""

    def __init__(
        self,
        settings: Settings,
        bus: Bus,
        *,
        http: httpx.AsyncClient | None = None,
        resolver: Resolve = resolve,
        clock: Callable[[], float] = time.time,
        ready: asyncio.Event | None = None,
    ) -> None:
        self.settings = settings
        self.bus = bus
        # No redirects, no proxies from the environment, and no kept connections: each POST
        # opens its own to the address it checked, with the TLS name of its own URL.
        self.http = http or httpx.AsyncClient(
            follow_redirects=False,
            trust_env=False,
            limits=httpx.Limits(max_keepalive_connections=0),
        )
        self.resolver = resolver
        self.clock = clock
        self.keys = KeyRing(keys_path(settings), settings.api_keys)
        self.batches = BatchStore(bus, settings)
        self.backoff = wh.delivery_backoff(settings.webhook_retry_s)
        self.speaker = Speaker.service("webhooks")
        self.delivered = 0
        self.given_up = 0
        self.ready = ready or asyncio.Event()  # set once `run` has bound the consumer
        self._stopping = asyncio.Event()

    def __repr__(self) -> str:
        return f"<WebhookService delivered={self.delivered} given_up={self.given_up}>"

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        js = self.bus.js
        stream = self.settings.streams.job_events
        with contextlib.suppress(Exception):  # a role that may not create it: provision does
            await ensure_webhook_consumer(js, self.settings)
        try:
            await self.bus.consumer_info(stream, WEBHOOK_CONSUMER)
        except NotFound:
            raise NotFound(
                f"The webhook consumer {stream}/{WEBHOOK_CONSUMER} does not exist and this user "
                "may not create it; run `jetgrid provision` as the admin user."
            ) from None
        sub = await js.pull_subscribe_bind(WEBHOOK_CONSUMER, stream=stream)
        self.ready.set()
        tasks: set[asyncio.Task[None]] = set()
        try:
            while not self._stopping.is_set():
                try:
                    msgs = await sub.fetch(16, timeout=0.5)
                except asyncio.CancelledError:
                    raise
                except Exception:  # nothing to do (timeout), or NATS away
                    await asyncio.sleep(0.05 if self.bus.is_connected else 0.5)
                    continue
                for msg in msgs:
                    task = asyncio.create_task(self.handle(msg))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def handle(self, msg: Msg) -> None:
        """Deliver what one terminal event calls for, then ack, nak or record it."""
        attempt = int(msg.metadata.num_delivered or 1)
        try:
            deliveries = await self.deliveries(msg.subject, msg.data)
        except Exception as exc:  # NATS away, or a record it cannot read: the event comes back
            late = wh.attempt_outcome(
                attempt, None, max_attempts=self.settings.webhook_attempts, policy=self.backoff
            )
            log.warning("webhooks of %s not looked up (%r): %s", msg.subject, exc, late.action)
            with contextlib.suppress(Exception):
                if late.action == "retry":
                    await msg.nak(delay=late.delay_s)
                else:  # it never could be: no end of retries for one event
                    await msg.ack()
            return
        outcome = wh.Outcome("done")
        for d in deliveries:
            if d.refused:
                await self.record(d, attempt, d.refused, seq=int(msg.metadata.sequence.stream))
                continue
            status, answer = await self.post(d)
            outcome = wh.attempt_outcome(
                attempt, status, max_attempts=self.settings.webhook_attempts, policy=self.backoff
            )
            if outcome.action == "give_up":
                await self.record(d, attempt, answer, seq=int(msg.metadata.sequence.stream))
                outcome = wh.Outcome("done")
            elif outcome.action == "retry":
                log.info("webhook of %s to %s: %s; retrying", d.about, d.url, answer)
                break
            else:
                self.delivered += 1
        with contextlib.suppress(Exception):
            if outcome.action == "retry":
                await msg.nak(delay=outcome.delay_s)
            else:
                await msg.ack()

    async def deliveries(self, subject: str, data: bytes) -> list[Delivery]:
        """The webhooks one terminal event calls for (none for most jobs)."""
        try:
            job_id, name = self.settings.subjects.parse_job_event(subject)
            env = decode(data)
        except (InvalidEvent, JetgridError):
            return []  # not a valid event: the projector records it
        job = await self.submission(job_id, env.event)
        stamp = self._stamp()
        out: list[Delivery] = []
        event = env.event
        if job is not None and job.webhook:
            data_ = {
                "id": job_id,
                "status": name,
                "model": job.model,
                "output": getattr(event, "output", None),
                "usage": getattr(event, "usage", None),
                "error": getattr(event, "reason", None),
            }
            body = wh.payload(f"job.{name}", data_, timestamp=stamp)
            secret, owner, refused = self.job_signer(job)
            msg_id, about = f"job_{job_id}", f"job {job_id}"
            out.append(Delivery(job.webhook, secret, msg_id, body, about, owner, refused))
        # A batch's job ids name the batch: a line cancelled before any worker took it counts
        # even when no event of it says where its submission is.
        batch_id = job.batch_id if job is not None else batch_of(job_id)
        if batch_id:
            batch = await self.batches.line_done(batch_id, job_id, name)
            if batch is not None and batch.webhook:
                statuses = await self.batches.line_statuses(batch.id)
                t = tally(list(statuses), cancel_asked=batch.cancelled_at is not None)
                view = {"id": batch.id, "object": "batch", "status": t.status,
                        "request_counts": t.counts()}  # fmt: skip
                body = wh.payload(f"batch.{t.status}", view, timestamp=stamp)
                secret, _ = self.signer(batch.key_name)
                msg_id, about = f"batch_{batch.id}", f"batch {batch.id}"
                out.append(Delivery(batch.webhook, secret, msg_id, body, about, batch.owner))
        return out

    async def submission(self, job_id: str, event: Any) -> JobSubmitted | None:
        """The job's submission, read back from JOBS (None if no event names where it is)."""
        seq = jobs_seq_of(event)
        names = self.settings.streams
        if seq is None:
            msgs = await self.bus.messages(
                names.job_events, subject=self.settings.subjects.job_events(job_id), limit=64
            )
            for m in msgs:
                with contextlib.suppress(InvalidEvent, JetgridError):
                    seq = jobs_seq_of(decode(m.data).event)
                if seq is not None:
                    break
        if seq is None and job_id.startswith("seq-") and job_id[4:].isdigit():
            seq = int(job_id[4:])
        if seq is None:
            return None
        env = await submission_at(self.bus, self.settings, int(seq), job_id)
        return env.event if env is not None and isinstance(env.event, JobSubmitted) else None

    def job_signer(self, job: JobSubmitted) -> tuple[str | None, str, str]:
        """(the secret that signs `job`'s delivery, its owner token, why it is not sent): with
        API keys, the secret of a key named `job.submitter` whose proof the job carries, else
        none and `NOT_PROVEN`; without keys as `signer`."""
        keys = self.keys.current(self.clock())
        if isinstance(keys, KeysFileError):  # fail closed: the event comes back later
            raise keys
        if not keys:
            return (*self.signer(job.submitter), "")
        proof, job_id, hook = job.webhook_proof, job.job_id, job.webhook
        for key in (k for k in keys.values() if k.name == job.submitter):
            secret = wh.key_secret(key.hash)
            if wh.proof_holds(secret, proof, job_id=job_id, submitter=key.name, webhook=hook):
                return secret, owner_token(key.hash), ""
        return None, UNPROVEN, wh.NOT_PROVEN

    def signer(self, submitter: str | None) -> tuple[str | None, str]:
        """(the secret that signs for `submitter`, its owner token): its API key's, or with no
        keys configured the deployment's (None when there is none to use) and "open"."""
        keys = self.keys.current(self.clock())
        if isinstance(keys, dict) and keys:
            found = next((k for k in keys.values() if k.name == submitter), None)
            if found is None:
                return None, "unknown"
            return wh.key_secret(found.hash), owner_token(found.hash)
        secret = self.settings.webhook_secret
        return (secret.get_secret_value() if secret is not None else None), owner_token("")

    async def post(self, d: Delivery) -> tuple[int | None, str]:
        """One attempt: (the HTTP status, or None when there was no answer; what happened)."""
        if d.refused:
            return None, d.refused
        if d.secret is None:
            return None, (
                "no secret to sign with: the submitter has no API key and "
                "JETGRID_WEBHOOK_SECRET is not set"
            )
        allow = self.settings.webhook_allow_private
        try:
            wh.check_url(d.url, allow_private=allow)
            parts = urlsplit(d.url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
            addresses = await self.resolver(parts.hostname or "", port)
            wh.check_addresses(d.url, addresses, allow_private=allow)
        except (wh.TargetRefused, OSError, ValueError) as exc:
            return None, f"refused: {exc}"
        url, host = wh.pinned(d.url, addresses[0])  # to the address just checked
        headers = {**wh.headers(d.secret, d.msg_id, int(self.clock()), d.body), "host": host}
        tls = {"sni_hostname": parts.hostname or ""} if parts.scheme == "https" else {}
        timeout = self.settings.webhook_timeout_s
        try:
            # Only the status counts: the answer's body is never read (it may be huge).
            async with self.http.stream(
                "POST", url, content=d.body, headers=headers, timeout=timeout, extensions=tls
            ) as resp:
                status = resp.status_code
        except httpx.HTTPError as exc:
            return None, f"no answer ({type(exc).__name__}: {exc})"
        return status, f"HTTP {status}"

    async def record(self, d: Delivery, attempts: int, answer: str, *, seq: int) -> None:
        """Record a delivery that gave up on ``<prefix>.invalid.WEBHOOKS``, under the JOB_EVENTS
        sequence of the event it was for (so a repeated record is stored once)."""
        self.given_up += 1
        reason = f"webhook of {d.about} to {d.url} gave up after {attempts} attempt(s): {answer}"
        log.warning("%s", reason)
        with contextlib.suppress(JetgridError):
            await self.bus.record_invalid(
                d.body,
                self.speaker,
                stream=DEAD_STREAM,
                subject=d.url[:256],
                seq=seq,
                reason=reason,
                headers={"webhook-id": d.msg_id, OWNER_HEADER: d.owner},
            )

    def _stamp(self) -> str:
        return datetime.fromtimestamp(self.clock(), UTC).isoformat().replace("+00:00", "Z")


async def serve_webhooks(
    settings: Settings, stop: asyncio.Event, ready: asyncio.Event | None = None
) -> None:
    """Run one webhook service on its own connection until `stop` is set; `ready` is set once
    it has bound its consumer. A service that stops on its own raises what stopped it."""
    bus = await Bus.connect(settings, name="jetgrid-webhooks")
    service = WebhookService(settings, bus, ready=ready)
    task = asyncio.create_task(service.run(), name="webhooks")
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({stopping, task}, return_when=asyncio.FIRST_COMPLETED)
        if not stopping.done():
            task.result()
            raise RuntimeError("the webhook service stopped on its own")
    finally:
        stopping.cancel()
        service.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 5)
        await service.http.aclose()
        await bus.close()


__all__ = ["Delivery", "WebhookService", "resolve", "serve_webhooks"]
