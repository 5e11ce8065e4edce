"""Pings: the schedule, simulated outcomes, and GPU probes that fail or hang, without a server."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import pynvml
import pytest

from jetgrid.events import GpuTelemetry, WorkerHeartbeat
from jetgrid.worker.pinger import Pinger, next_tick
from jetgrid.worker.simulate import UptimeSchedule
from jetgrid.worker.telemetry import FakeProbe, NvmlProbe, Reading, cpu_reading, unhealthy_reading


@pytest.mark.parametrize(
    ("t0", "interval", "current", "now", "expected"),
    [
        (0.0, 1.0, 0, 0.01, 1),  # on time: the next tick
        (0.0, 1.0, 0, 0.99, 1),
        (0.0, 1.0, 0, 1.0, 2),  # tick 1's deadline is now: it is past, skip to 2
        (0.0, 1.0, 0, 3.5, 4),  # ticks 1..3 passed while tick 0 was sent
        (10.0, 0.5, 4, 12.2, 5),
        (10.0, 0.5, 7, 12.2, 8),  # never goes back
        (0.0, 0.05, 99, 4.9999, 100),
    ],
)
def test_next_tick_keeps_to_absolute_deadlines(t0, interval, current, now, expected) -> None:
    assert next_tick(t0, interval, current, now) == expected


def heartbeat(n: int, reading: Reading) -> WorkerHeartbeat:
    return WorkerHeartbeat(
        worker_id="w1",
        n=n,
        interval_s=1.0,
        in_flight=0,
        problems=list(reading.problems),
        **reading.heartbeat_fields(),
    )


def pinger(probe: Any = None, **kw: Any) -> tuple[Pinger, list[WorkerHeartbeat]]:
    sent: list[WorkerHeartbeat] = []

    async def send(event: WorkerHeartbeat, n: int, at: float | None) -> None:
        sent.append(event)

    p = Pinger(interval_s=1.0, probe=probe or FakeProbe(), build=heartbeat, send=send, **kw)
    return p, sent


async def test_a_cpu_machine_pings_healthy_and_says_it_has_no_nvml() -> None:
    p, sent = pinger(NvmlProbe())  # the real probe: no NVML on this machine
    await p.tick(0)
    (ping,) = sent
    assert (ping.healthy, ping.nvml, ping.gpus, ping.problems) == (True, False, [], [])
    assert ping.nvml_error and "NVML" in ping.nvml_error


async def test_simulated_schedule_decides_each_tick() -> None:
    schedule = UptimeSchedule(0.85, seed=7)
    p, sent = pinger(schedule=schedule)
    for n in range(200):
        await p.tick(n)
    outcomes = schedule.outcomes(0, 200)
    by_n = {e.n: e for e in sent}
    assert sorted(by_n) == [n for n, o in enumerate(outcomes) if o != "missed"]
    for n, e in by_n.items():
        assert e.healthy == (outcomes[n] == "healthy")
        if not e.healthy:
            assert e.problems == ["simulated unhealthy ping (uptime 0.85, seed 7)"]
    assert p.counters.missed == outcomes.count("missed")
    assert p.counters.unhealthy == outcomes.count("unhealthy") > 0
    assert p.counters.healthy == outcomes.count("healthy") == 170


async def test_a_simulated_unhealthy_ping_keeps_the_real_telemetry() -> None:
    gpu = GpuTelemetry(index=0, uuid="GPU-1", temperature_c=50.0)
    probe = FakeProbe([Reading(nvml=True, nvml_error=None, gpus=[gpu])])
    schedule = UptimeSchedule(0.5, seed=1, unhealthy_share=1.0)
    p, sent = pinger(probe, schedule=schedule)
    for n in range(4):
        await p.tick(n)
    bad = [e for e in sent if not e.healthy]
    assert bad and all(e.gpus == [gpu] and e.nvml for e in bad)


async def test_an_unhealthy_reading_makes_an_unhealthy_ping_with_its_problems() -> None:
    p, sent = pinger(FakeProbe([cpu_reading(), unhealthy_reading("GPU 0 did not answer NVML")]))
    await p.tick(0)
    await p.tick(1)
    assert [(e.healthy, e.problems) for e in sent] == [
        (True, []),
        (False, ["GPU 0 did not answer NVML"]),
    ]


class LostGpuNvml:
    """Just enough of pynvml for one GPU that stops answering after `good` reads."""

    NVML_TEMPERATURE_GPU = pynvml.NVML_TEMPERATURE_GPU
    NVML_MEMORY_ERROR_TYPE_UNCORRECTED = pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED
    NVML_VOLATILE_ECC = pynvml.NVML_VOLATILE_ECC
    NVMLError = pynvml.NVMLError
    NVMLError_NotSupported = pynvml.NVMLError_NotSupported
    NVMLError_NoPermission = pynvml.NVMLError_NoPermission

    def __init__(self, good: int) -> None:
        self.good = good
        self.reads = 0

    def nvmlInit(self) -> None:
        pass

    def nvmlShutdown(self) -> None:
        pass

    def nvmlDeviceGetCount(self) -> int:
        return 1

    def nvmlDeviceGetHandleByIndex(self, i: int) -> str:
        return "h0"

    def nvmlDeviceGetUUID(self, h: str) -> str:
        return "GPU-0000"

    def nvmlDeviceGetName(self, h: str) -> bytes:
        return b"NVIDIA H100"

    def nvmlDeviceGetMemoryInfo(self, h: str) -> Any:
        self.reads += 1
        if self.reads > self.good:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        return SimpleNamespace(used=2**30, total=80 * 2**30)

    def nvmlDeviceGetUtilizationRates(self, h: str) -> Any:
        return SimpleNamespace(gpu=40)

    def nvmlDeviceGetTemperature(self, h: str, sensor: int) -> int:
        return 55

    def nvmlDeviceGetPowerUsage(self, h: str) -> int:
        return 300_000

    def nvmlDeviceGetTotalEccErrors(self, h: str, kind: int, counter: int) -> int:
        return 0


async def test_a_gpu_that_stops_answering_turns_pings_unhealthy_never_a_crash() -> None:
    p, sent = pinger(NvmlProbe(LostGpuNvml(good=2), watch_xids=False))
    for n in range(4):
        await p.tick(n)
    assert [e.healthy for e in sent] == [True, True, False, False]
    lost = sent[2]
    assert lost.nvml and lost.gpus[0].responsive is False
    assert "did not answer NVML" in lost.problems[0]
    assert sent[0].gpus[0].name == "NVIDIA H100" and sent[0].gpus[0].memory_total_mb == 81920


class HangingProbe:
    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def read(self) -> Reading:
        self.calls += 1
        self.release.wait(10)
        return cpu_reading()

    def close(self) -> None:
        self.release.set()


async def test_a_hung_probe_gives_unhealthy_pings_and_no_pile_of_threads() -> None:
    probe = HangingProbe()
    p, sent = pinger(probe, read_timeout_s=0.05)
    await p.tick(0)
    await p.tick(1)  # the first read is still hung: no second read starts
    assert probe.calls == 1
    assert [e.healthy for e in sent] == [False, False]
    assert "did not answer within 0.05 s" in sent[0].problems[0]
    assert "has not answered since ping 0" in sent[1].problems[0]
    probe.release.set()
    assert p._read is not None
    await p._read  # the hung read comes back
    await p.tick(2)
    assert probe.calls == 2 and sent[-1].healthy


class BrokenProbe:
    def read(self) -> Reading:
        raise RuntimeError("driver exploded")

    def close(self) -> None:
        pass


async def test_a_probe_that_raises_still_gives_a_ping() -> None:
    p, sent = pinger(BrokenProbe())
    await p.tick(0)
    assert not sent[0].healthy
    assert sent[0].problems == ["GPU probe failed: RuntimeError: driver exploded"]


async def test_a_failed_publish_is_counted_not_raised() -> None:
    async def send(event: WorkerHeartbeat, n: int, at: float | None) -> None:
        raise ConnectionError("NATS away")

    p = Pinger(interval_s=1.0, probe=FakeProbe(), build=heartbeat, send=send)
    await p.tick(0)
    assert (p.counters.failed, p.counters.sent) == (1, 0)


async def test_a_late_ping_is_stamped_with_the_time_its_tick_was_due() -> None:
    now = {"mono": 100.0, "wall": 1_700_000_000.0}
    stamps: list[float | None] = []

    async def send(event: WorkerHeartbeat, n: int, at: float | None) -> None:
        stamps.append(at)

    p = Pinger(interval_s=1.0, probe=FakeProbe(), build=heartbeat, send=send,
               clock=lambda: now["mono"], wall=lambda: now["wall"])  # fmt: skip
    await p.tick(3, due=99.96)  # 40 ms late
    await p.tick(4, due=100.5)  # early (cannot happen, but must not stamp the future)
    await p.tick(5)  # no deadline: the publisher's clock decides
    assert stamps == [pytest.approx(1_700_000_000.0 - 0.04), 1_700_000_000.0, None]
