"""Heartbeats: one ping per tick of ``heartbeat_interval``, with GPU health, on absolute deadlines.

Tick k is due at ``t0 + k * interval`` (t0: when the pinger started), so the time a probe read
or a publish takes never drifts the schedule. A ping's event time is the wall-clock time its
tick was due (now, minus how late it is): uptime slots are cut by event time, and a ping sent
40 ms late by a busy event loop must still land in its own slot, not in the next one. Measured
as "now minus lateness", it follows the wall clock without accumulating drift. A tick whose
deadline passed while the previous one was still being sent (a stalled event loop, a slow NATS)
is not sent late: it is skipped and counted, because a ping that did not go out on time is the
truth about uptime. The ping's ``n`` is its tick number, so gaps in ``n`` show skipped ticks.

Per tick:

1. With a simulation (``--simulate-uptime``), `UptimeSchedule.ping_outcome(k)` decides first:
   ``missed`` sends nothing, ``unhealthy`` sends a ping with ``healthy=false`` and says why in
   ``problems``, ``healthy`` sends what the probe saw. The schedule advances on every tick,
   skipped ones included, so slot k of the uptime tracker is tick k.
2. The GPU probe is read in a thread (NVML calls block, and can hang on a lost GPU); once it
   has said there is no NVML at all, it is read inline (its answer is then constant). A read that
   takes longer than ``read_timeout_s`` gives an unhealthy ping ("NVML did not answer"), and no
   second read starts until the hung one returns: the following pings say it is still hung.
   Whatever the probe does, a ping goes out; nothing here raises but CancelledError.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from jetgrid.events import WorkerHeartbeat
from jetgrid.worker.simulate import UptimeSchedule
from jetgrid.worker.telemetry import GpuProbe, Reading

__all__ = ["PingCounters", "Pinger", "next_tick", "simulated"]

log = logging.getLogger("jetgrid.worker.ping")


@dataclass
class PingCounters:
    sent: int = 0
    healthy: int = 0
    unhealthy: int = 0
    missed: int = 0  # simulated misses
    skipped: int = 0  # ticks whose deadline passed before they could be sent
    failed: int = 0  # publishes that NATS did not store


def next_tick(t0: float, interval: float, current: int, now: float) -> int:
    """The next tick after `current` whose deadline is not yet past at `now`."""
    due = math.floor((now - t0) / interval) + 1
    return max(current + 1, due)


def simulated(reading: Reading, why: str) -> Reading:
    """`reading`, made unhealthy by the simulation (the real telemetry is kept)."""
    return replace(reading, healthy=False, problems=(*reading.problems, why))


class Pinger:
    """Sends `build(n, reading)` through `send(event, n)` on every tick; see the module doc."""

    def __init__(
        self,
        *,
        interval_s: float,
        probe: GpuProbe,
        build: Callable[[int, Reading], WorkerHeartbeat],
        send: Callable[[WorkerHeartbeat, int, float | None], Awaitable[None]],
        schedule: UptimeSchedule | None = None,
        read_timeout_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"Heartbeat interval must be > 0 s, got {interval_s!r}.")
        self.interval_s = interval_s
        self.probe = probe
        self.build = build
        self.send = send
        self.schedule = schedule
        self.read_timeout_s = read_timeout_s or max(2.0, interval_s)
        self.clock = clock
        self.wall = wall
        self.counters = PingCounters()
        self.last: WorkerHeartbeat | None = None
        self._read: asyncio.Task[Reading] | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self._inline = False
        self._read_since = 0

    def __repr__(self) -> str:
        c = self.counters
        return (
            f"<Pinger every {self.interval_s:g}s sent={c.sent} unhealthy={c.unhealthy} "
            f"missed={c.missed} skipped={c.skipped} failed={c.failed}>"
        )

    async def run(self) -> None:
        t0 = self.clock()
        n = 0
        while True:
            await self.tick(n, due=t0 + n * self.interval_s, background=True)
            following = next_tick(t0, self.interval_s, n, self.clock())
            if following > n + 1:
                self.counters.skipped += following - n - 1
                log.info("pings %d..%d were due while ping %d was sent", n + 1, following - 1, n)
            n = following
            await asyncio.sleep(max(0.0, t0 + n * self.interval_s - self.clock()))

    async def tick(self, n: int, due: float | None = None, *, background: bool = False) -> None:
        """Everything tick `n` (due at monotonic `due`) does; never raises but CancelledError.

        With `background`, the publish (and its wait for the stream's ack: an fsync with
        ``sync_interval: always``) runs on while the next tick is scheduled, so a slow ack
        never makes the following ping late.
        """
        outcome = self.schedule.ping_outcome(n) if self.schedule else "healthy"
        if outcome == "missed":
            self.counters.missed += 1
            return
        reading = await self.read(n)
        if outcome == "unhealthy":
            assert self.schedule is not None
            reading = simulated(
                reading,
                f"simulated unhealthy ping (uptime {self.schedule.uptime:g}, "
                f"seed {self.schedule.seed})",
            )
        try:
            event = self.build(n, reading)
        except Exception as exc:  # a bug in the ping's fields must not stop the pinger
            self.counters.failed += 1
            log.exception("ping %d could not be built: %s", n, exc)
            return
        at = None if due is None else self.wall() - max(0.0, self.clock() - due)
        if background:
            task = asyncio.create_task(self._send(event, n, at))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        else:
            await self._send(event, n, at)

    async def _send(self, event: WorkerHeartbeat, n: int, at: float | None) -> None:
        try:
            await self.send(event, n, at)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # NATS away: the missing ping is the truth about uptime
            self.counters.failed += 1
            log.warning("ping %d not stored: %s", n, exc)
            return
        self.last = event
        self.counters.sent += 1
        if event.healthy:
            self.counters.healthy += 1
        else:
            self.counters.unhealthy += 1

    async def read(self, n: int) -> Reading:
        """The probe's reading for tick `n`, or an unhealthy one if NVML hangs or fails."""
        if self._inline:
            try:
                return self.probe.read()
            except Exception as exc:  # a probe that raises despite its contract: still a ping
                why = f"GPU probe failed: {type(exc).__name__}: {exc}"
                return Reading(nvml=False, nvml_error=why, healthy=False, problems=(why,))
        if self._read is not None:
            if not self._read.done():  # still hung since an earlier ping: do not pile up
                why = f"NVML has not answered since ping {self._read_since}"
                return Reading(nvml=True, nvml_error=why, healthy=False, problems=(why,))
            if not self._read.cancelled():
                self._read.exception()  # mark it retrieved; its reading is stale either way
            self._read = None  # it came back meanwhile: read afresh
        self._read = task = asyncio.ensure_future(asyncio.to_thread(self.probe.read))
        self._read_since = n
        try:
            reading = await asyncio.wait_for(asyncio.shield(task), self.read_timeout_s)
        except TimeoutError:
            why = f"NVML did not answer within {self.read_timeout_s:g} s"
            return Reading(nvml=True, nvml_error=why, healthy=False, problems=(why,))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a probe that raises despite its contract: still a ping
            self._read = None
            why = f"GPU probe failed: {type(exc).__name__}: {exc}"
            return Reading(nvml=False, nvml_error=why, healthy=False, problems=(why,))
        self._read = None
        # Without NVML a read is a constant answer that cannot block; a thread hop per ping
        # would only add latency (tens of ms on a busy 2-core machine) to every ping.
        self._inline = not reading.nvml and reading.nvml_error is not None and reading.healthy
        return reading

    def close(self) -> None:
        """Stop what is in flight: a probe read, and pings still waiting for their ack."""
        if self._read is not None and not self._read.done():
            self._read.cancel()
        for task in self._sending:
            task.cancel()
