"""The outcomes part on its own, on a bus that fails on demand: the terminal store retries as
coordinator.backoff.TERMINAL_STORE says and is stored before the ack, and an output too large to
store is recorded as a failure. Also `Held.abort`, which the cancel listener acts through."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from jetgrid.coordinator.bus import Bus, Stored
from jetgrid.coordinator.errors import NatsUnavailable, PayloadTooLarge
from jetgrid.coordinator.pools import PoolConfig
from jetgrid.coordinator.settings import Settings
from jetgrid.events import Event, JobCompleted, JobStarted, JobSubmitted
from jetgrid.events.addressing import Speaker, event_name
from jetgrid.worker.backends.base import RunContext
from jetgrid.worker.delivery import Delivery as DeliveryProtocol
from jetgrid.worker.held import Held
from jetgrid.worker.options import Counters
from jetgrid.worker.outcomes import Outcomes

JOB = JobSubmitted(job_id="j1", model="echo", pool="standard", prompt="hi")
START = JobStarted(job_id="j1", worker_id="w1", attempt=1, jobs_seq=1, tier_factor=1.0)
DONE = JobCompleted(job_id="j1", worker_id="w1", attempt=1, output={"r": "hi"}, duration_s=0.1)


class FlakyBus:
    """Stores events after `failures` NATS errors; refuses the types in `too_large`."""

    def __init__(self, failures: int = 0, too_large: tuple[type, ...] = ()) -> None:
        self.failures = failures
        self.too_large = too_large
        self.log: list[str] = []
        self.tries = 0
        self.acks: list[str] = []  # how the acks of sent events go, in turn: ok, error, lost

    async def store(self, event: Event, speaker: Speaker, **_: Any) -> Stored:
        self.tries += 1
        if isinstance(event, self.too_large):
            raise PayloadTooLarge("Could not publish: the message is too large.")
        if self.failures:
            self.failures -= 1
            raise NatsUnavailable("No NATS server answered.")
        self.log.append(f"stored {event_name(event)}")
        return Stored("JOB_EVENTS", len(self.log), duplicate=False)

    async def send(self, event: Event, speaker: Speaker, **_: Any) -> asyncio.Future[Any]:
        """The stream's ack comes at once, fails or is lost, as `self.acks` says."""
        self.log.append(f"sent {event_name(event)}")
        ack: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        how = self.acks.pop(0) if self.acks else "ok"
        if how == "ok":
            ack.set_result(None)
        elif how == "error":
            ack.set_exception(NatsUnavailable("No NATS server answered."))
        else:
            ack.cancel()
        return ack


class Delivery:
    """A delivered message that notes its ack or nak in the bus's log."""

    @classmethod
    def noting_in(cls, log: list[str]) -> DeliveryProtocol:
        return cast(DeliveryProtocol, cls(log))  # the two methods Outcomes calls on a delivery

    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def ack(self) -> None:
        self.log.append("ack")

    async def nak(self, delay: float | None = None) -> None:
        self.log.append(f"nak {delay}")


def make(bus: FlakyBus, waits: list[float] | None = None) -> tuple[Outcomes, Counters]:
    counters = Counters()

    async def sleep(s: float) -> None:  # time is an input: the waits are recorded, not spent
        if waits is not None:
            waits.append(s)

    part = Outcomes(
        bus=cast(Bus, bus),  # a fake with the two methods Outcomes calls
        settings=Settings(),
        pool=PoolConfig("standard"),
        speaker=Speaker.worker("w1", "boot"),
        worker_id="w1",
        counters=counters,
        sleep=sleep,
    )
    return part, counters


async def test_the_terminal_event_is_stored_before_the_ack() -> None:
    bus = FlakyBus()
    part, _ = make(bus)
    await part.finish(Delivery.noting_in(bus.log), DONE)
    assert bus.log == ["stored completed", "ack"]


async def test_a_failed_store_is_retried_after_the_policys_waits() -> None:
    bus = FlakyBus(failures=2)
    waits: list[float] = []
    part, _ = make(bus, waits)
    assert await part.store_terminal(DONE)
    assert bus.tries == 3 and waits == [0.2, 0.4]


async def test_a_store_that_keeps_failing_hands_the_job_back_after_five_tries() -> None:
    bus = FlakyBus(failures=99)
    waits: list[float] = []
    part, _ = make(bus, waits)
    await part.finish(Delivery.noting_in(bus.log), DONE)
    assert bus.tries == 5 and waits == [0.2, 0.4, 0.8, 1.6]
    assert bus.log == ["nak 1.0"]  # nothing stored, no ack: the job runs again


async def test_an_output_too_large_to_store_is_recorded_as_failed_and_acked() -> None:
    bus = FlakyBus(too_large=(JobCompleted,))
    part, _ = make(bus)
    await part.finish(Delivery.noting_in(bus.log), DONE)
    assert bus.log == ["stored failed", "ack"] and bus.tries == 2


async def test_failed_and_cancelled_are_stored_acked_and_counted() -> None:
    bus = FlakyBus()
    part, counters = make(bus)
    await part.fail(Delivery.noting_in(bus.log), JOB, 1, "bad input", "bad_input")
    await part.cancel(Delivery.noting_in(bus.log), JOB, 1, None)
    assert bus.log == ["stored failed", "ack", "stored cancelled", "ack"]
    assert (counters.failed, counters.cancelled) == (1, 1)


async def test_held_abort_signals_the_job_and_cancels_its_backend_task() -> None:
    held = Held()
    held.abort("j0")  # nothing held under that id: nothing to do
    ctx = RunContext(worker_id="w1", attempt=1)
    run = asyncio.create_task(asyncio.sleep(30))
    held.contexts["j1"], held.runs["j1"] = ctx, run
    held.abort("j1")
    await asyncio.wait({run})
    assert ctx.cancelled.is_set() and run.cancelled()


# -- `started`, sent without waiting for its ack (issue 13) ------------------------------------


async def test_started_is_sent_and_its_ack_checked_before_the_job_is_acked() -> None:
    bus = FlakyBus()
    part, counters = make(bus)
    await part.start(START)
    await part.finish(Delivery.noting_in(bus.log), DONE)
    assert bus.log == ["sent started", "stored completed", "ack"]
    assert counters.started_restored == 0 and not part.unconfirmed


@pytest.mark.parametrize("ack", ["error", "lost"])
async def test_a_started_without_an_ack_is_stored_after_the_outcome_before_the_ack(
    ack: str,
) -> None:
    bus = FlakyBus()
    bus.acks = [ack]
    part, counters = make(bus)
    await part.start(START)
    await part.finish(Delivery.noting_in(bus.log), DONE)
    assert bus.log == ["sent started", "stored completed", "stored started", "ack"]
    assert counters.started_restored == 1


async def test_a_retry_checks_the_started_before_its_nak() -> None:
    bus = FlakyBus()
    bus.acks = ["lost"]
    part, _ = make(bus)
    await part.start(START)
    await part.retry(Delivery.noting_in(bus.log), JOB, 1, "oom")
    assert bus.log == ["sent started", "sent retrying", "stored started", "nak 1.0"]


async def test_an_outcome_that_cannot_be_stored_leaves_the_started_alone() -> None:
    bus = FlakyBus(failures=99)
    bus.acks = ["lost"]
    part, _ = make(bus, [])
    await part.start(START)
    await part.finish(Delivery.noting_in(bus.log), DONE)
    assert bus.log == ["sent started", "nak 1.0"]  # NATS is away: the job runs again
    part.forget("j1")
    assert not part.unconfirmed
