"""What a worker holds now: a task per delivery, and per running job its context and backend run.

A delivery holds one of the worker's slots until its backend call returns (or, for one that runs
none, until its outcome is stored); then, `finishing`, it stores its outcome and is acked while
the slot runs the next job. Shared by the worker's parts: the job runner fills it, the pull
scheduler counts it, the cancel listener aborts what it names, pings report it, and draining
waits for it.
"""

from __future__ import annotations

import asyncio

from jetgrid.worker.backends.base import RunContext

__all__ = ["Held", "Running"]


class Running:
    """A job's backend call, awaited in its delivery's task: what a cancel request and the
    stall watchdog cancel. `cancels` counts the cancellations asked through it, so the task can
    tell them from one asked by anything else (the drain)."""

    __slots__ = ("cancels", "task")

    def __init__(self, task: asyncio.Task[None]) -> None:
        self.task = task
        self.cancels = 0

    def cancel(self) -> None:
        self.cancels += 1
        self.task.cancel()

    def settle(self) -> bool:
        """After a CancelledError in the task: withdraw this call's own cancellations; True if
        that leaves none (the call was stopped here, not the task from outside)."""
        if not self.cancels:
            return False
        left = self.task.cancelling()
        for _ in range(self.cancels):
            left = self.task.uncancel()
        self.cancels = 0
        return left == 0


class Held:
    """The deliveries a worker is handling and the jobs it is running."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[None]] = set()  # one per delivery holding a slot
        self.finishing: set[asyncio.Task[None]] = set()  # slot freed, outcome not yet acked/naked
        self.contexts: dict[str, RunContext] = {}  # job id -> its context, claimed to outcome
        self.runs: dict[str, Running] = {}  # job id -> its backend call, while it is awaited

    def free(self, task: asyncio.Task[None]) -> bool:
        """`task`'s delivery gives its slot up and goes on finishing; True if it held one."""
        if task not in self.tasks:
            return False
        self.tasks.discard(task)
        self.finishing.add(task)
        return True

    def done(self, task: asyncio.Task[None]) -> None:
        """`task`'s delivery was acked, naked or handed back."""
        self.tasks.discard(task)
        self.finishing.discard(task)

    def every(self) -> set[asyncio.Task[None]]:
        """Every delivery still held, with a slot or finishing: what draining waits for."""
        return self.tasks | self.finishing

    def abort(self, job_id: str) -> None:
        """Signal a held job that it is cancelled, and cancel its backend call if it runs."""
        ctx = self.contexts.get(job_id)
        if ctx is not None:
            ctx.cancelled.set()
        run = self.runs.get(job_id)
        if run is not None:
            run.cancel()
