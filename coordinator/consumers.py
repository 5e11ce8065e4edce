"""Pool consumers as plain data: one durable pull consumer per (pool, model), shared by workers."""

from __future__ import annotations

from dataclasses import dataclass

from events import Subjects, encode_model


@dataclass(frozen=True, slots=True)
class ConsumerSpec:
    """The durable consumer every worker of one (pool, model) binds to."""

    stream: str
    name: str
    filter_subject: str
    ack_wait_s: float
    max_deliver: int
    max_ack_pending: int
    backoff_s: tuple[float, ...] = ()


def consumer_name(pool: str, model: str) -> str:
    """Durable name of the (pool, model) consumer, e.g. ``pool-standard-llama3_2E2_3A1b``."""
    return f"pool-{pool}-{encode_model(model)}"


def pool_consumer(
    subjects: Subjects,
    stream: str,
    pool: str,
    model: str,
    *,
    ack_wait_s: float,
    max_deliver: int,
    max_ack_pending: int,
    backoff_s: tuple[float, ...] = (),
) -> ConsumerSpec:
    return ConsumerSpec(
        stream=stream,
        name=consumer_name(pool, model),
        filter_subject=subjects.submit(pool, model),
        ack_wait_s=ack_wait_s,
        max_deliver=max_deliver,
        max_ack_pending=max_ack_pending,
        backoff_s=backoff_s,
    )
