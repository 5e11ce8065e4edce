"""Reading a stream back, whole, in log order (for assertions about what was stored)."""

from __future__ import annotations

import asyncio
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy


async def read_stream(
    js: JetStreamContext,
    stream: str,
    subject: str = ">",
    *,
    batch: int = 2000,
    within_s: float = 30.0,
) -> list[Any]:
    """Every message of `stream` on `subject`, in log order (an ephemeral, unacked reader).

    Reads exactly as many messages as the consumer had pending when it was made; a fetch that
    times out (a loaded machine, a cluster electing a leader) is tried again, and if the log
    cannot be read whole within `within_s` this raises rather than return part of it: a
    partial read would look like lost events."""
    if (await js.stream_info(stream)).state.messages == 0:
        return []
    sub = await js.pull_subscribe(
        subject,
        stream=stream,
        config=ConsumerConfig(
            ack_policy=AckPolicy.NONE,
            deliver_policy=DeliverPolicy.ALL,
            inactive_threshold=30,
            mem_storage=True,
        ),
    )
    out: list[Any] = []
    try:
        expected = (await sub.consumer_info()).num_pending
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        while len(out) < expected:
            try:
                out += await sub.fetch(min(batch, expected - len(out)), timeout=1.0)
            except Exception as exc:
                if loop.time() > deadline:
                    raise AssertionError(
                        f"read {len(out)} of {expected} messages of {stream} on {subject}: {exc!r}"
                    ) from exc
    finally:
        await sub.unsubscribe()
    return out


async def count_subjects(js: JetStreamContext, stream: str, subject: str) -> dict[str, int]:
    info = await js.stream_info(stream, subjects_filter=subject)
    return dict(info.state.subjects or {})
