"""Pool consumers as plain data: durable pull consumers per (pool, model), shared by workers.

Each (pool, model) has one consumer per priority: ``pool-<pool>-<model-token>`` for normal (the
original four-token submission subject) and ``pool-<pool>-<model-token>_high`` / ``_low`` for the
priority subjects. A model token never contains ``_h`` or ``_l`` (``_`` is always followed by two
upper-case hex digits), so the names cannot collide.

In a fair-share pool each tenant's queue has its own durable consumer, ``<name>_T<tenant-token>``
(after the priority suffix, if any; ``T`` is not a hex digit either), made on demand by the
workers that first see the queue, and kept like the shared ones (JOBS keeps every submission:
a consumer made afresh would deliver the queue's jobs again). An affinity lane of a tenant queue
has ``<that name>_L<lane>``.
"""

from __future__ import annotations

from dataclasses import dataclass

from jetgrid.events import Subjects, encode_model
from jetgrid.events.subjects import encode_tenant


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
    priority: str = "normal"
    tenant: str | None = None
    lane: int | None = None


def consumer_name(
    pool: str,
    model: str,
    priority: str = "normal",
    tenant: str | None = None,
    lane: int | None = None,
) -> str:
    """Durable name of the (pool, model) consumer, e.g. ``pool-standard-llama3_2E2_3A1b``."""
    base = f"pool-{pool}-{encode_model(model)}"
    base = base if priority == "normal" else f"{base}_{priority}"
    base = base if tenant is None else f"{base}_T{encode_tenant(tenant)}"
    return base if lane is None else f"{base}_L{lane}"


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
    priority: str = "normal",
    tenant: str | None = None,
    lane: int | None = None,
) -> ConsumerSpec:
    return ConsumerSpec(
        stream=stream,
        name=consumer_name(pool, model, priority, tenant, lane),
        filter_subject=subjects.submit(pool, model, priority, tenant, lane),
        ack_wait_s=ack_wait_s,
        max_deliver=max_deliver,
        max_ack_pending=max_ack_pending,
        backoff_s=backoff_s,
        priority=priority,
        tenant=tenant,
        lane=lane,
    )
