"""The dead-letter watcher: JetStream's max-deliveries advisories in, `dead` events out.

When a job's submission reaches its pool's MaxDeliver, JetStream stops delivering it and sends
``$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<JOBS>.<consumer>`` with the message's stream
sequence. The DEAD_LETTERS stream stores those advisories (so none is lost while no watcher is
connected); watchers share one durable consumer on it. For each advisory a watcher reads the
submission from JOBS (a direct get by sequence), derives its job id as every other reader does
(events.decode_submission, so a bare submission is ``seq-<N>``), and publishes ``JobDead`` with
``Nats-Msg-Id: <job>:terminal``. Any number of watchers may run: the stream drops the duplicates,
and the read model keeps the first terminal event of a job in any case.

Run one with `jetgrid deadletter`; `jetgrid up` and every `jetgrid worker` run one too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from jetgrid.coordinator.aio import retrying
from jetgrid.coordinator.backoff import (
    DEAD_LETTER_SETUP,
    NOT_STORED_NAK_S,
    dead_letter_fetch_wait_s,
)
from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.delivery import dead_reason, parse_max_deliveries, runs_before
from jetgrid.coordinator.provision import provision_streams
from jetgrid.coordinator.roles import DEAD_LETTER_CONSUMER
from jetgrid.coordinator.settings import Settings
from jetgrid.events import (
    JOBS,
    InvalidEvent,
    JetgridError,
    JobDead,
    dead_letter_spec,
    decode,
    decode_submission,
    now,
)
from jetgrid.events.addressing import Speaker

log = logging.getLogger("jetgrid.deadletter")

CONSUMER = DEAD_LETTER_CONSUMER


class DeadLetterWatcher:
    """Turns stored max-deliveries advisories into `dead` events; `run()` until `stop()`."""

    def __init__(
        self,
        settings: Settings,
        bus: Bus,
        *,
        name: str = "deadletter",
        worker_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.bus = bus
        # A watcher inside a worker says `dead` under that worker's id (its NATS user may
        # publish nothing else); the gateway's, the projector's and `jetgrid deadletter`'s
        # under none.
        self.speaker = Speaker(f"jetgrid/{name}", worker_id)
        self.js = bus.js
        self.spec = dead_letter_spec(
            settings.streams,
            replicas=settings.stream_replicas,
            duplicate_window_s=settings.duplicate_window_s,
        )
        self.published = 0
        self._stopping = asyncio.Event()
        self.ready = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def ensure(self) -> None:
        """Create the DEAD_LETTERS stream and the watchers' shared consumer if missing."""
        await provision_streams(self.js, [self.spec])
        try:
            await self.js.consumer_info(self.spec.name, CONSUMER)
        except NotFoundError:
            await self.js.add_consumer(
                self.spec.name,
                ConsumerConfig(
                    durable_name=CONSUMER,
                    ack_policy=AckPolicy.EXPLICIT,
                    deliver_policy=DeliverPolicy.ALL,
                    ack_wait=30,
                ),
            )

    async def run(self) -> None:
        await retrying(self.ensure, DEAD_LETTER_SETUP, "set up dead letters", logger=log)
        sub = await self.js.pull_subscribe_bind(CONSUMER, stream=self.spec.name)
        self.ready.set()
        try:
            while not self._stopping.is_set():
                try:
                    msgs = await sub.fetch(16, timeout=0.5)
                except asyncio.CancelledError:
                    raise
                except Exception:  # nothing to do (timeout), or NATS away: try again shortly
                    await asyncio.sleep(dead_letter_fetch_wait_s(self.bus.is_connected))
                    continue
                for msg in msgs:
                    await self._handle_stored(msg)
        finally:
            # Unsubscribe rather than let the connection drain a fetch queue nobody reads.
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _handle_stored(self, msg: Msg) -> None:
        try:
            await self.handle(msg.data)
        except Exception as exc:  # NATS away mid-way: the advisory comes back
            log.warning("dead letter not recorded yet (%s); will retry", exc)
            with contextlib.suppress(Exception):
                await msg.nak(delay=NOT_STORED_NAK_S)
            return
        with contextlib.suppress(Exception):
            await msg.ack()

    async def handle(self, advisory: bytes) -> str | None:
        """Publish the `dead` event an advisory calls for; returns the job id (None: skipped)."""
        adv = parse_max_deliveries(advisory)
        if adv is None or adv.stream != self.settings.streams.jobs:
            log.info("ignored an advisory that is not about %s", self.settings.streams.jobs)
            return None
        stored = await self.bus.message(adv.stream, adv.stream_seq)
        if stored is None:
            log.warning("JOBS seq %d gave up but is no longer stored", adv.stream_seq)
            return None
        try:
            env = decode_submission(
                stored.data,
                subject=stored.subject,
                subjects=self.settings.subjects,
                seq=adv.stream_seq,
                stream_time=now(),  # only the job id matters here
            )
        except InvalidEvent as exc:  # the worker that saw it recorded it too: the same record
            log.info("JOBS seq %d gave up and is not a valid job: %s", adv.stream_seq, exc.reason)
            try:
                await self.bus.record_invalid(
                    stored.data,
                    self.speaker,
                    stream=JOBS,
                    subject=stored.subject,
                    seq=adv.stream_seq,
                    reason=exc.reason,
                    headers=stored.headers,
                )
            except JetgridError as err:  # not permitted, or NATS away: never retry forever
                log.warning("JOBS seq %d not recorded as invalid: %s", adv.stream_seq, err)
            return None
        job_id: str = env.event.job_id
        runs = runs_before(adv.deliveries)  # the last delivery only records the outcome
        dead = JobDead(
            job_id=job_id,
            attempts=runs,
            jobs_seq=adv.stream_seq,
            reason=dead_reason(runs, await last_retry_reason(self.bus, self.settings, job_id)),
        )
        await self.bus.store(dead, self.speaker)
        self.published += 1
        log.info("job %s is dead after %d deliveries", job_id, adv.deliveries)
        return job_id


async def last_retry_reason(bus: Bus, settings: Settings, job_id: str) -> str | None:
    """The reason of the job's last stored `retrying` event, if any (workers say it under their
    id; a log from before worker tokens has it without)."""
    subject = settings.subjects.job_event(job_id, "retrying")
    for filter_subject in (f"{subject}.*", subject):
        try:
            msg = await bus.last_message(settings.streams.job_events, filter_subject)
            if msg is not None:
                return str(decode(msg.data).event.reason)
        except Exception:  # NATS away, or not a retrying event: no reason to give
            continue
    return None


def watch_beside_worker(settings: Settings, bus: Bus, worker_id: str) -> asyncio.Task[None]:
    """A worker's own watcher, on its connection, as a task; its failure only logs a warning."""
    name = f"worker/{worker_id}/deadletter"
    watcher = DeadLetterWatcher(settings, bus, name=name, worker_id=worker_id)

    async def watch() -> None:
        try:
            await watcher.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # e.g. not permitted here: the job path must carry on
            log.warning("dead-letter watcher stopped: %s; run `jetgrid deadletter`", exc)

    return asyncio.create_task(watch(), name=f"deadletter-{worker_id}")


async def watch_dead_letters(settings: Settings, stop: asyncio.Event) -> None:
    """Connect and run one watcher until `stop` is set (the `jetgrid deadletter` command)."""
    bus = await Bus.connect(settings, name="jetgrid-deadletter")
    watcher = DeadLetterWatcher(settings, bus)
    task = asyncio.create_task(watcher.run())
    try:
        await asyncio.wait(
            {task, asyncio.create_task(stop.wait())}, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        watcher.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 5)
        await bus.close()


__all__ = ["CONSUMER", "DeadLetterWatcher", "watch_beside_worker", "watch_dead_letters"]
