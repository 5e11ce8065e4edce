"""What a worker holds now: a task per delivery, and per running job its context and backend task.

Shared by the worker's parts: the job runner fills it, the pull scheduler counts it, the cancel
listener aborts what it names, pings report it, and draining waits for it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from jetgrid.worker.backends.base import RunContext

__all__ = ["Held"]


class Held:
    """The deliveries a worker is handling and the jobs it is running."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[None]] = set()  # one per delivery, until it is acked/naked
        self.contexts: dict[str, RunContext] = {}  # job id -> its context, claimed to outcome
        self.runs: dict[str, asyncio.Task[Any]] = {}  # job id -> the backend running it

    def abort(self, job_id: str) -> None:
        """Signal a held job that it is cancelled, and cancel its backend task if it runs."""
        ctx = self.contexts.get(job_id)
        if ctx is not None:
            ctx.cancelled.set()
        run = self.runs.get(job_id)
        if run is not None:
            run.cancel()
