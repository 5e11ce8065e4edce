"""The outcomes part on its own, on a bus that fails on demand: the terminal store retries as
coordinator.backoff.TERMINAL_STORE says and is stored before the ack, and an output too large to
store is recorded as a failure. Also `Held.abort`, which the cancel listener acts through."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

import pytest

from jetgrid.coordinator.bus import Bus, Stored
from jetgrid.coordinator.errors import NatsUnavailable, PayloadTooLarge
from jetgrid.coordinator.pools import PoolConfig
from jetgrid.coordinator.settings import Settings
from jetgrid.events import Claim, Event, JobCompleted, JobStarted, JobSubmitted, now
from jetgrid.events.addressing import Speaker, event_name
from jetgrid.worker.backends.base import RunContext
from jetgrid.worker.delivery import Delivery as DeliveryProtocol
from jetgrid.worker.held import Held, Running
from jetgrid.worker.options import Counters
from jetgrid.worker.outcomes import Outcomes

JOB = JobSubmitted(job_id="j1", model="echo", pool="standard", prompt="hi")
# A redelivery: its `started` is said at once.
START = JobStarted(job_id="j1", worker_id="w1", attempt=2, jobs_seq=1, tier_factor=1.0)
DONE = JobCompleted(job_id="j1", worker_id="w1", attempt=2, output={"r": "hi"}, duration_s=0.1)
# A first delivery: its `started` waits for the run to last `started_after_s`.
FIRST = START.model_copy(update={"attempt": 1, "fallback": True})
FIRST_DONE = DONE.model_copy(update={"attempt": 1})


class FlakyBus:
    """Stores events after `failures` NATS errors; refuses the types in `too_large`."""

    def __init__(self, failures: int = 0, too_large: tuple[type, ...] = ()) -> None:
        self.failures = failures
        self.too_large = too_large
        self.log: list[str] = []
        self.said: list[tuple[Event, Any]] = []  # every event stored or sent, with its time
        self.tries = 0
        self.acks: list[str] = []  # how the acks of sent events go, in turn: ok, error, lost

    async def store(self, event: Event, speaker: Speaker, *, time: Any = None) -> Stored:
        self.tries += 1
        if isinstance(event, self.too_large):
            raise PayloadTooLarge("Could not publish: the message is too large.")
        if self.failures:
            self.failures -= 1
            raise NatsUnavailable("No NATS server answered.")
        self.log.append(f"stored {event_name(event)}")
        self.said.append((event, time))
        return Stored("JOB_EVENTS", len(self.log), duplicate=False)

    async def send(
        self, event: Event, speaker: Speaker, *, time: Any = None
    ) -> asyncio.Future[Any]:
        """The stream's ack comes at once, fails or is lost, as `self.acks` says."""
        self.log.append(f"sent {event_name(event)}")
        self.said.append((event, time))
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
        self.metadata = SimpleNamespace(sequence=SimpleNamespace(stream=1))

    async def ack(self) -> None:
        self.log.append("ack")

    async def nak(self, delay: float | None = None) -> None:
        self.log.append(f"nak {delay}")

    async def in_progress(self) -> None:
        self.log.append("in progress")


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


async def test_the_last_delivery_is_held_while_dead_is_tried_on_through_an_outage() -> None:
    """No delivery comes after the one that records `dead`: past the terminal store's five
    tries it keeps the delivery (in progress) and tries on through LAST_DEAD, then naks."""
    bus = FlakyBus(failures=8)
    waits: list[float] = []
    part, _ = make(bus, waits)
    await part.record_dead(Delivery.noting_in(bus.log), JOB, seq=7)
    assert bus.tries == 9
    assert waits == [0.2, 0.4, 0.8, 1.6, 0.5, 1.0, 2.0]
    assert bus.log == ["in progress"] * 3 + ["stored dead", "nak None"]
    assert bus.said[0][0].jobs_seq == 7


async def test_a_dead_that_cannot_be_stored_in_a_minute_is_left_to_the_advisory() -> None:
    bus = FlakyBus(failures=99)
    waits: list[float] = []
    part, _ = make(bus, waits)
    await part.record_dead(Delivery.noting_in(bus.log), JOB, seq=7)
    assert bus.tries == 5 + 20 and sum(waits) == pytest.approx(3.0 + 67.5)
    assert bus.log == ["in progress"] * 19 + ["nak None"]  # nothing stored: the advisory's turn


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
    held.contexts["j1"], held.runs["j1"] = ctx, Running(run)
    held.abort("j1")
    await asyncio.wait({run})
    assert ctx.cancelled.is_set() and run.cancelled()


@pytest.mark.parametrize(
    ("ours", "outside", "settled"),
    [(1, 0, True), (2, 0, True), (1, 1, False), (0, 1, False)],
)
async def test_a_running_call_tells_its_own_cancellations_from_anothers(
    ours: int, outside: int, settled: bool
) -> None:
    """The backend call is awaited in the delivery's task: a cancel request or the watchdog
    (through Running) stops the call and the task goes on to report it; a cancellation from
    outside (the drain) stops the task."""
    seen: list[tuple[bool, int]] = []

    async def delivery() -> None:
        try:
            await asyncio.sleep(30)  # the backend
        except asyncio.CancelledError:
            seen.append((running.settle(), task.cancelling()))
            if not seen[-1][0]:
                raise
        await asyncio.sleep(0)  # after a settled stop the task is not cancelled again
        seen.append((True, task.cancelling()))

    task = asyncio.create_task(delivery())
    running = Running(task)
    await asyncio.sleep(0)
    for _ in range(ours):
        running.cancel()
    for _ in range(outside):
        task.cancel()
    await asyncio.wait({task})
    assert task.cancelled() is not settled
    assert seen[0][0] is settled
    if settled:
        assert seen == [(True, 0), (True, 0)]


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


# -- a first run over before `started_after_s` says no `started`: its outcome carries the claim


def carried(bus: FlakyBus, name: str) -> Claim | None:
    [event] = [e for e, _ in bus.said if event_name(e) == name]
    return getattr(event, "claim", None)


async def test_a_short_first_run_says_no_started_and_its_outcome_carries_the_claim() -> None:
    bus = FlakyBus()
    part, _ = make(bus)
    before = now()
    await part.start(FIRST)
    await part.finish(Delivery.noting_in(bus.log), FIRST_DONE)
    assert bus.log == ["stored completed", "ack"]  # one stored event: the outcome
    claim = carried(bus, "completed")
    assert claim is not None and (claim.jobs_seq, claim.tier_factor, claim.fallback) == (
        1,
        1.0,
        True,
    )
    assert before <= claim.at <= now()
    assert not part.pending and not part.unconfirmed
    part.forget("j1")  # the delivery's end: nothing left to say
    assert bus.log == ["stored completed", "ack"]


async def test_a_first_run_that_lasts_says_started_under_the_claims_time() -> None:
    bus = FlakyBus()
    part, counters = make(bus)
    await part.start(FIRST)
    at = part.pending["j1"][1]
    part.claim_due("j1")  # what the timer does once the run has lasted started_after_s
    await asyncio.sleep(0)  # the run goes on: the send runs in its own task
    await part.finish(Delivery.noting_in(bus.log), FIRST_DONE)
    assert bus.log == ["sent started", "stored completed", "ack"]
    assert bus.said[0] == (FIRST, at)  # said late, under the time the job was taken
    assert carried(bus, "completed") is None  # the claim is in the log once
    assert counters.started_restored == 0 and not part.unconfirmed


async def test_a_late_started_without_an_ack_is_stored_again_before_the_ack() -> None:
    bus = FlakyBus()
    bus.acks = ["lost"]
    part, counters = make(bus)
    await part.start(FIRST)
    part.claim_due("j1")
    await asyncio.sleep(0)
    await part.finish(Delivery.noting_in(bus.log), FIRST_DONE)
    assert bus.log == ["sent started", "stored completed", "stored started", "ack"]
    assert counters.started_restored == 1 and bus.said[-1][1] == bus.said[0][1]


async def test_a_short_first_run_that_retries_stores_the_claim_on_retrying_before_the_nak() -> None:
    bus = FlakyBus()
    part, _ = make(bus)
    await part.start(FIRST)
    await part.retry(Delivery.noting_in(bus.log), JOB, 1, "oom")
    assert bus.log == ["stored retrying", "nak 1.0"]  # stored and awaited: it holds the claim
    assert carried(bus, "retrying") is not None


async def test_a_short_first_run_too_large_to_store_carries_the_claim_on_its_failure() -> None:
    bus = FlakyBus(too_large=(JobCompleted,))
    part, _ = make(bus)
    await part.start(FIRST)
    await part.finish(Delivery.noting_in(bus.log), FIRST_DONE)
    assert bus.log == ["stored failed", "ack"] and carried(bus, "failed") is not None


async def test_a_first_run_handed_back_before_its_outcome_says_its_started() -> None:
    bus = FlakyBus()
    part, _ = make(bus)
    await part.start(FIRST)
    part.forget("j1")  # handed back (the drain grace ran out): the worker did take it
    await asyncio.sleep(0)  # the send runs in its own task
    assert bus.log == ["sent started"] and not part.pending


async def test_a_first_run_that_dies_on_its_last_delivery_says_started_then_dead() -> None:
    bus = FlakyBus()
    part = make(bus)[0]
    part.pool = PoolConfig("standard", max_deliver=1)
    await part.start(FIRST)
    await part.retry(Delivery.noting_in(bus.log), JOB, 1, "oom")
    await asyncio.sleep(0)
    assert bus.log == ["stored dead", "sent started", "nak None"]  # `dead` cannot carry it


async def test_an_outcome_that_cannot_be_stored_leaves_the_started_alone() -> None:
    bus = FlakyBus(failures=99)
    bus.acks = ["lost"]
    part, _ = make(bus, [])
    await part.start(START)
    await part.finish(Delivery.noting_in(bus.log), DONE)
    assert bus.log == ["sent started", "nak 1.0"]  # NATS is away: the job runs again
    part.forget("j1")
    assert not part.unconfirmed
