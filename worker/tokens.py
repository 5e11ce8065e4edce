"""Ephemeral token streaming: a running job's output, chunk by chunk, on core NATS.

Subject ``<prefix>.tokens.<job_id>``; each message is ``{"job_id", "i", "text"}`` with `i`
counting chunks from 0. Nothing is stored: a client that missed chunks reads the whole output
from the job's `completed` event.
"""

from __future__ import annotations

import json

from nats.aio.client import Client as NATS


class TokenPublisher:
    """Publishes one job's output chunks in order."""

    def __init__(self, nc: NATS, subject: str, job_id: str) -> None:
        self.nc = nc
        self.subject = subject
        self.job_id = job_id
        self.i = 0

    async def __call__(self, text: str) -> None:
        body = json.dumps({"job_id": self.job_id, "i": self.i, "text": text})
        self.i += 1
        await self.nc.publish(self.subject, body.encode())
