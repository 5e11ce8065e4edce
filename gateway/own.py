"""Submissions this gateway stores itself, kept so that its job board folds each one from the
envelope it stored instead of decoding its bytes again when they come back on JOBS.

`Bus.before_store` hands every event the gateway is about to publish to `OwnSubmissions.expect`,
which keeps a submission only where decode_submission would give the same envelope from those
bytes on that subject: its time is UTC, its id is one a submitter may choose, and the subject
names its pool, model, priority, tenant and lane. `take` gives it back (and forgets it) only for
a message with the same ``Nats-Msg-Id``, subject and bytes: any other message, forged or not,
is decoded and checked as before. Entries leave when taken, when their store fails (`forget`),
after `age_s`, and oldest first past `size`, so a gateway whose stores fail cannot grow it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC

from jetgrid.events import Envelope, JetgridError, JobSubmitted, Subjects, check_chosen_id

SIZE = 4096  # submissions kept at most (those in flight on one gateway)
AGE_S = 60.0  # seconds one is kept at most (a store that failed leaves its entry behind)


class OwnSubmissions:
    """The submissions this gateway is storing, by ``Nats-Msg-Id`` (the job id)."""

    def __init__(
        self,
        subjects: Subjects,
        *,
        size: int = SIZE,
        age_s: float = AGE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.subjects, self.size, self.age_s, self.clock = subjects, size, age_s, clock
        self._kept: OrderedDict[str, tuple[float, str, bytes, Envelope]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._kept)

    def expect(self, subject: str, data: bytes, env: Envelope) -> None:
        """Keep `env`, about to be stored as `data` on `subject`, if it is a submission that
        decode_submission would give back whole (see the module docstring)."""
        kept, now = self._kept, self.clock()
        while kept and (len(kept) >= self.size or next(iter(kept.values()))[0] < now - self.age_s):
            kept.popitem(last=False)
        job = env.event
        if not isinstance(job, JobSubmitted) or env.time.tzinfo is not UTC or env.id != job.job_id:
            return
        try:
            check_chosen_id(job.job_id)
            pool, model, priority, tenant, lane = self.subjects.parse_submit_lane(subject)
        except JetgridError:
            return
        same = (pool, model, tenant, lane) == (job.pool, job.model, job.tenant, job.lane)
        if same and priority in ("normal", job.priority):
            kept[env.id] = (now, subject, data, env)
            kept.move_to_end(env.id)

    def forget(self, msg_id: str) -> None:
        """Drop what `expect` kept under `msg_id` (its store failed)."""
        self._kept.pop(msg_id, None)

    def take(self, msg_id: str | None, subject: str, data: bytes, seq: int) -> Envelope | None:
        """The kept envelope at `seq` for a message with this id, subject and exact bytes (and
        forget it); None for any other message, to be decoded."""
        own = self._kept.pop(msg_id, None) if msg_id and self._kept else None
        if own is None or own[1] != subject or own[2] != data:
            return None
        return own[3].at(seq, subject)
