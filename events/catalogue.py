"""The catalogue: every event type, one discriminated union, and the upcasters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Union

from pydantic import Field, TypeAdapter

from jetgrid.events.base import Event
from jetgrid.events.invalid import InvalidMessage
from jetgrid.events.jobs import JobSubmitted
from jetgrid.events.lifecycle import (
    JobCancelled,
    JobCancelRequested,
    JobClaimed,
    JobCompleted,
    JobDead,
    JobExpired,
    JobFailed,
    JobProgress,
    JobRejected,
    JobRetrying,
    JobStarted,
)
from jetgrid.events.workers import (
    WorkerDeregistered,
    WorkerDraining,
    WorkerHeartbeat,
    WorkerRegistered,
    WorkerRollup,
)

EVENT_TYPES: tuple[type[Event], ...] = (
    JobSubmitted,
    JobStarted,
    JobProgress,
    JobCompleted,
    JobFailed,
    JobRetrying,
    JobCancelRequested,
    JobCancelled,
    JobDead,
    JobRejected,
    JobExpired,
    WorkerRegistered,
    WorkerHeartbeat,
    WorkerDraining,
    WorkerDeregistered,
    WorkerRollup,
    InvalidMessage,
)

AnyEvent = Annotated[
    Union[  # noqa: UP007  (a Union of a tuple's members reads clearest spelled out)
        JobSubmitted,
        JobStarted,
        JobProgress,
        JobCompleted,
        JobFailed,
        JobRetrying,
        JobCancelRequested,
        JobCancelled,
        JobDead,
        JobRejected,
        JobExpired,
        WorkerRegistered,
        WorkerHeartbeat,
        WorkerDraining,
        WorkerDeregistered,
        WorkerRollup,
        InvalidMessage,
    ],
    Field(discriminator="type"),
]
ANY_EVENT: TypeAdapter[Any] = TypeAdapter(AnyEvent)


def type_name(cls: type[Event]) -> str:
    return str(cls.model_fields["type"].default)


def current_version(cls: type[Event]) -> int:
    return int(cls.model_fields["version"].default)


# Types that old logs hold and no one publishes any more, with the model they decode as (through
# the upcasters below): a `claimed` is the claim half of JobStarted version 2.
RETIRED_TYPES: dict[str, type[Event]] = {type_name(JobClaimed): JobStarted}

BY_TYPE: dict[str, type[Event]] = {type_name(c): c for c in EVENT_TYPES} | RETIRED_TYPES

# An upcaster turns the `data` of (type, version N) into the data of version N+1. They run at
# decode, before the event object exists; the log itself is never rewritten. Register one as
#     UPCASTERS[("jetgrid.worker.heartbeat", 1)] = upcast_heartbeat_v1_v2
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


def upcast_claimed_v1_started_v2(data: dict[str, Any]) -> dict[str, Any]:
    """A `claimed` (JobClaimed) as the JobStarted version 2 it was folded into: the same fields
    (worker, attempt, `jobs_seq`, tier); `jobs_seq` marks it as the claim."""
    return data


def upcast_started_v1_v2(data: dict[str, Any]) -> dict[str, Any]:
    """A version 1 `started` followed its `claimed` and says no claim: it may not carry the
    fields version 2 added (`jobs_seq`, `tier_factor`, `fallback`)."""
    extra = sorted(_CLAIM_FIELDS & set(data))
    if extra:
        raise ValueError(f"a version 1 started has no fields {extra}")
    return data


_CLAIM_FIELDS = frozenset({"jobs_seq", "tier_factor", "fallback"})


UPCASTERS: dict[tuple[str, int], Upcaster] = {
    (type_name(JobClaimed), 1): upcast_claimed_v1_started_v2,
    (type_name(JobStarted), 1): upcast_started_v1_v2,
}


def upcast(
    type_: str,
    version: int,
    data: dict[str, Any],
    target: int,
    upcasters: dict[tuple[str, int], Upcaster] | None = None,
) -> dict[str, Any]:
    """Run the chain of upcasters that brings `data` from `version` to `target`."""
    chain = UPCASTERS if upcasters is None else upcasters
    while version < target:
        step = chain.get((type_, version))
        if step is None:
            raise LookupError(f"No upcaster from {type_} version {version} to {version + 1}.")
        data = step(data)
        version += 1
    return data
