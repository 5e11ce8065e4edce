"""What a worker is told (`WorkerOptions`) and what it counts (`Counters`), shared by its parts."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

__all__ = ["Counters", "WorkerOptions", "default_worker_id"]


def default_worker_id() -> str:
    """The host name, reduced to subject-token characters."""
    host = socket.gethostname().split(".")[0] or "worker"
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in host)[:64]


@dataclass
class WorkerOptions:
    pool: str
    models: tuple[str, ...]
    worker_id: str = field(default_factory=default_worker_id)
    concurrency: int = 1
    burst: bool = False
    drain_grace_s: float = 30.0
    # --simulate-uptime: miss or fail pings on a reproducible schedule (worker.simulate).
    simulate_uptime: float | None = None
    simulate_seed: int = 0
    # Run a dead-letter watcher alongside (worker/deadletter.py); any number of them is safe.
    dead_letters: bool = True


@dataclass
class Counters:
    claimed: int = 0
    completed: int = 0
    failed: int = 0
    retried: int = 0
    invalid: int = 0
    pings: int = 0
    cancelled: int = 0
    timed_out: int = 0
    duplicates: int = 0  # terminal events the stream dropped: another worker reported first
    started_restored: int = 0  # `started` events stored again: no ack came (worker.outcomes)
    stalled: int = 0  # jobs handed back by the stall watchdog (coordinator.stalls)
    cancel_lookups: int = 0  # stored cancel requests looked up before a job started
