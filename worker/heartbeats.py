"""Heartbeats and tiers: a worker's pings, and the tier that decides how much it may pull.

`Heartbeats` builds each ping (`heartbeat`: the GPU health the probe read, made unhealthy by a
stall since the previous ping (coordinator.stalls), what the worker holds and has done, what its
backend reports, its tier factor) and stores it on worker.pinger's schedule. It follows the
worker's key in the tiers bucket (worker.tiers.TierWatch, retrying as
coordinator.backoff.tier_watch_retry_s says) and applies each tier to the pull gate
(worker.tiers.PullGate): a new worker, or one whose key is gone, pulls at the probation factor.
When the factor drops to 0, pull requests already out would still deliver, so they are withdrawn.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from jetgrid.coordinator.backoff import tier_watch_retry_s
from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.errors import NatsUnavailable
from jetgrid.coordinator.settings import Settings
from jetgrid.coordinator.stalls import stall_problem
from jetgrid.coordinator.tiers import PROBATION, load_policy
from jetgrid.events import WorkerHeartbeat
from jetgrid.events.addressing import Speaker
from jetgrid.worker.backends.base import Backend
from jetgrid.worker.held import Held
from jetgrid.worker.options import Counters, WorkerOptions
from jetgrid.worker.pinger import Pinger
from jetgrid.worker.simulate import UptimeSchedule
from jetgrid.worker.telemetry import GpuProbe, NvmlProbe, Reading
from jetgrid.worker.tiers import PullGate, TierUpdate, TierWatch

__all__ = ["Heartbeats"]

log = logging.getLogger("jetgrid.worker")


class Heartbeats:
    """A worker's pinger, tier watch and tier gate; `run(bus)` pings and watches until cancelled."""

    def __init__(
        self,
        *,
        settings: Settings,
        options: WorkerOptions,
        speaker: Speaker,
        backend: Backend,
        counters: Counters,
        held: Held,
        stopping: asyncio.Event,
        wake: asyncio.Event,
        withdraw: Callable[[], Awaitable[None]],
        probe: GpuProbe | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.options = options
        self.speaker = speaker
        self.worker_id = options.worker_id
        self.boot_id = speaker.boot_id
        self.backend = backend
        self.counters = counters
        self.held = held
        self.stopping = stopping
        self.wake = wake
        self.withdraw = withdraw
        s = settings
        self.probation_factor = load_policy(s.tier_policy_file, s.tier_policy).probation_factor
        self.gate = PullGate(
            concurrency=options.concurrency,
            rate=s.pull_rate,
            burst=s.pull_burst,
            factor=self.probation_factor,
            clock=clock,
        )
        schedule = None
        if options.simulate_uptime is not None:
            schedule = UptimeSchedule(options.simulate_uptime, seed=options.simulate_seed)
        self.pinger = Pinger(
            interval_s=s.heartbeat_interval_s,
            probe=probe or NvmlProbe(),
            build=self.heartbeat,
            send=self.send,
            schedule=schedule,
            clock=clock,
        )
        self.tier_watch: TierWatch | None = None  # from run() on
        self.pulls_withdrawn = 0
        self.stalls_reported = 0  # counters.stalled as of the last ping built
        self._bus: Bus | None = None  # while run() runs
        self._side_tasks: set[asyncio.Task[None]] = set()

    def heartbeat(self, n: int, reading: Reading | None = None) -> WorkerHeartbeat:
        """The ping this worker sends at tick `n`, with the GPU health `reading` saw."""
        reading = reading or Reading(nvml=False, nvml_error="no GPU probe read")
        stalls, self.stalls_reported = (
            self.counters.stalled - self.stalls_reported,
            self.counters.stalled,
        )
        if stalls:  # a stall makes this slot unhealthy (coordinator.stalls)
            why = stall_problem(stalls)
            reading = replace(reading, healthy=False, problems=(*reading.problems, why))
        return WorkerHeartbeat(
            worker_id=self.worker_id,
            n=n,
            interval_s=self.settings.heartbeat_interval_s,
            in_flight=len(self.held.contexts),
            completed=self.counters.completed,
            failed=self.counters.failed,
            pools=[self.options.pool],
            models=list(self.options.models),
            **reading.heartbeat_fields(),
            problems=list(reading.problems),
            tier_factor=self.gate.factor,
            boot_id=self.boot_id,
            **self.backend_report(),
        )

    def backend_report(self) -> dict[str, Any]:
        """Ping fields from the backend: its models, and whether it is accepting jobs."""
        b = self.backend
        return {
            "models_loaded": list(getattr(b, "loaded", [])),
            "models_available": list(getattr(b, "available", [])),
            "backend_error": getattr(b, "last_error", None),
            "accepting": not self.stopping.is_set() and bool(getattr(b, "accepting", True)),
        }

    async def send(self, event: WorkerHeartbeat, n: int, at: float | None) -> None:
        """Store one ping (the pinger's `send`), its event time the wall time it was due."""
        bus = self._bus
        if bus is None:  # the pinger runs only inside run(); a stray tick is a failed ping
            raise RuntimeError(f"Ping {n} was not sent: the worker is not connected.")
        if not bus.is_connected:  # held for the reconnect, it would be stored late, out of time
            raise NatsUnavailable(f"Ping {n} was not sent: NATS is not connected.")
        when = None if at is None else datetime.fromtimestamp(at, UTC)
        await bus.store(event, self.speaker, time=when)
        self.counters.pings += 1

    def on_tier(self, update: TierUpdate | None) -> None:
        """Apply the tier the watch saw (None: no key, a new worker's factor) to the gate."""
        if update is None:
            tier, factor = PROBATION, self.probation_factor
        else:
            tier, factor = update.tier, update.factor
        if self.gate.set_factor(factor, tier):
            log.info("worker %s: tier %s, factor %g", self.worker_id, tier, factor)
            if factor == 0:  # pull requests already out would still deliver: withdraw them
                task = asyncio.create_task(self._withdraw())
                self._side_tasks.add(task)
                task.add_done_callback(self._side_tasks.discard)
        self.wake.set()

    async def _withdraw(self) -> None:
        await self.withdraw()
        self.pulls_withdrawn += 1

    async def run(self, bus: Bus) -> None:
        """Ping on schedule and follow this worker's tier, until cancelled."""
        self._bus = bus
        self.tier_watch = TierWatch(
            bus.js,
            self.settings.tiers_bucket,
            self.worker_id,
            self.on_tier,
            retry_s=tier_watch_retry_s(self.settings.heartbeat_interval_s),
        )
        try:
            await asyncio.gather(self.pinger.run(), self.tier_watch.run())
        finally:
            self.pinger.close()
            await asyncio.to_thread(self.pinger.probe.close)
