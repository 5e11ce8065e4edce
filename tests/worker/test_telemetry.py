"""GPU telemetry: the real no-NVML path on this machine, and NVML failures through a fake module.

This machine has no GPU, so the error paths run against a fake of the pynvml module that raises
pynvml's own error classes, injected through NvmlProbe's constructor.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pynvml
import pytest

from jetgrid.events import GpuTelemetry, WorkerHeartbeat
from jetgrid.worker.telemetry import (
    FakeProbe,
    GpuProbe,
    NvmlProbe,
    Reading,
    cpu_reading,
    unhealthy_reading,
)


def _has_nvml() -> bool:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    pynvml.nvmlShutdown()
    return True


HAS_NVML = _has_nvml()


# -- the real thing -----------------------------------------------------------------------------
@pytest.mark.skipif(HAS_NVML, reason="this machine has NVML; the no-NVML path needs one without")
def test_no_nvml_here_is_a_healthy_cpu_reading() -> None:
    with NvmlProbe() as probe:
        first = probe.read()
        assert first == probe.read()
        assert not probe.available
    assert (first.nvml, first.gpus, first.healthy, first.problems) == (False, [], True, ())
    assert first.nvml_error is not None and first.nvml_error.startswith("NVML unavailable: ")
    strict = NvmlProbe(require_gpu=True).read()
    assert (strict.nvml, strict.healthy) == (False, False)
    assert "requires a GPU" in strict.problems[0]


@pytest.mark.skipif(not HAS_NVML, reason="needs a machine with an NVIDIA GPU and driver")
def test_real_gpus_answer() -> None:
    with NvmlProbe() as probe:
        reading = probe.read()
    assert reading.nvml and reading.nvml_error is None and reading.gpus
    for gpu in reading.gpus:
        assert gpu.responsive and gpu.uuid and gpu.name
        assert gpu.memory_total_mb and gpu.memory_total_mb > 0


# -- a fake NVML --------------------------------------------------------------------------------
@dataclass
class FakeGpu:
    uuid: str = "GPU-0000"
    name: Any = "NVIDIA H100 80GB HBM3"
    used: int = 1024 * 1024 * 1024
    total: int = 80 * 1024 * 1024 * 1024
    util: int = 37
    temp: int = 54
    power_mw: int = 312_345
    ecc: int = 0
    xids: list[int] = field(default_factory=list)
    fail: dict[str, BaseException] = field(default_factory=dict)


class FakeNvml:
    """The slice of the pynvml module NvmlProbe uses, with pynvml's constants and errors."""

    NVML_TEMPERATURE_GPU = pynvml.NVML_TEMPERATURE_GPU
    NVML_MEMORY_ERROR_TYPE_UNCORRECTED = pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED
    NVML_VOLATILE_ECC = pynvml.NVML_VOLATILE_ECC
    nvmlEventTypeXidCriticalError = pynvml.nvmlEventTypeXidCriticalError
    NVMLError = pynvml.NVMLError
    NVMLError_NotSupported = pynvml.NVMLError_NotSupported
    NVMLError_NoPermission = pynvml.NVMLError_NoPermission
    NVMLError_FunctionNotFound = pynvml.NVMLError_FunctionNotFound
    NVMLError_Timeout = pynvml.NVMLError_Timeout

    def __init__(self, *gpus: FakeGpu, init_error: BaseException | None = None) -> None:
        self.gpus = list(gpus)
        self.init_error = init_error
        self.count_error: BaseException | None = None
        self.calls: Counter[str] = Counter()
        self.freed: list[Any] = []

    def _get(self, h: FakeGpu, call: str, value: Any) -> Any:
        self.calls[call] += 1
        if call in h.fail:
            raise h.fail[call]
        return value

    def nvmlInit(self) -> None:
        self.calls["nvmlInit"] += 1
        if self.init_error:
            raise self.init_error

    def nvmlShutdown(self) -> None:
        self.calls["nvmlShutdown"] += 1

    def nvmlDeviceGetCount(self) -> int:
        if self.count_error:
            raise self.count_error
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> FakeGpu:
        return self._get(self.gpus[i], "handle", self.gpus[i])

    def nvmlDeviceGetUUID(self, h: FakeGpu) -> str:
        return self._get(h, "nvmlDeviceGetUUID", h.uuid)

    def nvmlDeviceGetName(self, h: FakeGpu) -> Any:
        return self._get(h, "nvmlDeviceGetName", h.name)

    def nvmlDeviceGetMemoryInfo(self, h: FakeGpu) -> Any:
        return self._get(h, "nvmlDeviceGetMemoryInfo", SimpleNamespace(used=h.used, total=h.total))

    def nvmlDeviceGetUtilizationRates(self, h: FakeGpu) -> Any:
        return self._get(h, "nvmlDeviceGetUtilizationRates", SimpleNamespace(gpu=h.util, memory=0))

    def nvmlDeviceGetTemperature(self, h: FakeGpu, sensor: int) -> int:
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        return self._get(h, "nvmlDeviceGetTemperature", h.temp)

    def nvmlDeviceGetPowerUsage(self, h: FakeGpu) -> int:
        return self._get(h, "nvmlDeviceGetPowerUsage", h.power_mw)

    def nvmlDeviceGetTotalEccErrors(self, h: FakeGpu, kind: int, counter: int) -> int:
        assert kind == pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED
        assert counter == pynvml.NVML_VOLATILE_ECC
        return self._get(h, "nvmlDeviceGetTotalEccErrors", h.ecc)

    def nvmlEventSetCreate(self) -> SimpleNamespace:
        return SimpleNamespace(gpu=None)

    def nvmlDeviceRegisterEvents(self, h: FakeGpu, kinds: int, es: SimpleNamespace) -> None:
        assert kinds == pynvml.nvmlEventTypeXidCriticalError
        self._get(h, "nvmlDeviceRegisterEvents", None)
        es.gpu = h

    def nvmlEventSetWait(self, es: SimpleNamespace, timeout_ms: int) -> Any:
        assert timeout_ms == 0
        self._get(es.gpu, "nvmlEventSetWait", None)
        if not es.gpu.xids:
            raise pynvml.NVMLError_Timeout()
        xid = es.gpu.xids.pop(0)
        return SimpleNamespace(eventType=pynvml.nvmlEventTypeXidCriticalError, eventData=xid)

    def nvmlEventSetFree(self, es: SimpleNamespace) -> None:
        self.freed.append(es)


def test_reads_every_field_of_every_gpu() -> None:
    nvml = FakeNvml(FakeGpu(), FakeGpu(uuid="GPU-1111", name=b"NVIDIA A10", util=0))
    reading = NvmlProbe(nvml).read()
    assert (reading.nvml, reading.nvml_error, reading.healthy, reading.problems) == (
        True,
        None,
        True,
        (),
    )
    assert reading.gpus == [
        GpuTelemetry(
            index=0,
            uuid="GPU-0000",
            name="NVIDIA H100 80GB HBM3",
            responsive=True,
            memory_used_mb=1024.0,
            memory_total_mb=81920.0,
            utilization_pct=37.0,
            temperature_c=54.0,
            power_w=312.3,
            ecc_errors=0,
            xid_errors=0,
        ),
        GpuTelemetry(
            index=1,
            uuid="GPU-1111",
            name="NVIDIA A10",
            responsive=True,
            memory_used_mb=1024.0,
            memory_total_mb=81920.0,
            utilization_pct=0.0,
            temperature_c=54.0,
            power_w=312.3,
            ecc_errors=0,
            xid_errors=0,
        ),
    ]


def test_initialises_once() -> None:
    nvml = FakeNvml(FakeGpu())
    probe = NvmlProbe(nvml)
    for _ in range(3):
        probe.read()
    assert nvml.calls["nvmlInit"] == 1
    assert probe.available


def test_driver_not_loaded_is_a_cpu_machine_and_is_not_retried() -> None:
    nvml = FakeNvml(init_error=pynvml.NVMLError_DriverNotLoaded())
    probe = NvmlProbe(nvml)
    readings = [probe.read() for _ in range(3)]
    assert readings[0] == Reading(False, "NVML unavailable: Driver Not Loaded", [], True)
    assert readings[0] == readings[2]
    assert nvml.calls["nvmlInit"] == 1


@pytest.mark.parametrize(
    "error",
    [pynvml.NVMLError_NotSupported(), pynvml.NVMLError_NoPermission()],
)
def test_unsupported_metrics_are_none_not_failures(error: BaseException) -> None:
    gpu = FakeGpu(
        fail={
            "nvmlDeviceGetTotalEccErrors": error,
            "nvmlDeviceGetPowerUsage": error,
            "nvmlDeviceGetUtilizationRates": error,
            "nvmlDeviceRegisterEvents": error,
        }
    )
    reading = NvmlProbe(FakeNvml(gpu)).read()
    (g,) = reading.gpus
    assert reading.healthy and g.responsive and g.error is None
    assert (g.ecc_errors, g.power_w, g.utilization_pct, g.xid_errors) == (None, None, None, None)
    assert g.temperature_c == 54.0


@pytest.mark.parametrize(
    ("call", "error", "text"),
    [
        ("nvmlDeviceGetTemperature", pynvml.NVMLError_GpuIsLost(), "GPU is lost"),
        ("nvmlDeviceGetMemoryInfo", pynvml.NVMLError_Unknown(), "Unknown Error"),
        ("nvmlDeviceGetPowerUsage", pynvml.NVMLError_Timeout(), "Timeout"),
        ("nvmlDeviceGetTotalEccErrors", pynvml.NVMLError_ResetRequired(), "GPU requires restart"),
        ("nvmlEventSetWait", pynvml.NVMLError_GpuIsLost(), "GPU is lost"),
        (
            "nvmlDeviceGetTemperature",
            pynvml.NVMLError(pynvml.NVML_ERROR_NOT_READY),
            "NVML Error with code 27",
        ),
        ("nvmlDeviceGetTemperature", RuntimeError("driver wedged"), "driver wedged"),
    ],
)
def test_a_gpu_that_stops_answering_is_unresponsive_and_unhealthy(
    call: str, error: BaseException, text: str
) -> None:
    good, bad = FakeGpu(uuid="GPU-good"), FakeGpu(uuid="GPU-bad", fail={call: error})
    reading = NvmlProbe(FakeNvml(good, bad)).read()
    assert reading.nvml and not reading.healthy
    assert reading.gpus[0].responsive and reading.gpus[0].error is None
    lost = reading.gpus[1]
    assert (lost.index, lost.uuid, lost.responsive) == (1, "GPU-bad", False)
    assert lost.error == f"{call}: {text}"
    assert reading.problems == (f"GPU 1 (GPU-bad) did not answer NVML: {lost.error}",)


def test_a_gpu_without_a_handle() -> None:
    gpu = FakeGpu(fail={"handle": pynvml.NVMLError_GpuIsLost()})
    reading = NvmlProbe(FakeNvml(FakeGpu(), gpu), watch_xids=False).read()
    assert reading.gpus[1] == GpuTelemetry(
        index=1, responsive=False, error="nvmlDeviceGetHandleByIndex: GPU is lost"
    )
    assert reading.problems == (
        "GPU 1 did not answer NVML: nvmlDeviceGetHandleByIndex: GPU is lost",
    )


def test_device_count_failure_is_unhealthy() -> None:
    nvml = FakeNvml(FakeGpu())
    probe = NvmlProbe(nvml)
    probe.read()
    nvml.count_error = pynvml.NVMLError_Unknown()
    reading = probe.read()
    assert (reading.nvml, reading.gpus, reading.healthy) == (True, [], False)
    assert reading.nvml_error == "nvmlDeviceGetCount: Unknown Error"


def test_anything_else_still_returns_a_reading() -> None:
    nvml = FakeNvml(FakeGpu())
    probe = NvmlProbe(nvml)
    nvml.count_error = KeyError("surprise")
    reading = probe.read()
    assert not reading.healthy and "NVML probe failed" in (reading.nvml_error or "")


def test_uncorrected_ecc_errors_rising_make_that_reading_unhealthy() -> None:
    gpu = FakeGpu(ecc=2)  # errors from before the worker started: the baseline
    probe = NvmlProbe(FakeNvml(gpu))
    verdicts = []
    for ecc in (2, 2, 3, 3, 0, 0):  # 0: the driver reloaded and reset the volatile count
        gpu.ecc = ecc
        r = probe.read()
        verdicts.append(r.healthy)
        if not r.healthy:
            assert r.problems == ("GPU 0 (GPU-0000): uncorrected ECC errors rose from 2 to 3",)
    assert verdicts == [True, True, False, True, True, True]


def test_hardware_xids_are_unhealthy_application_xids_are_counted() -> None:
    gpu = FakeGpu()
    probe = NvmlProbe(FakeNvml(gpu))
    seen = []
    for pending in ([], [13, 31], [79], [], [48, 43]):
        gpu.xids = list(pending)
        r = probe.read()
        seen.append((r.healthy, r.gpus[0].xid_errors))
    assert seen == [(True, 0), (True, 2), (False, 3), (True, 3), (False, 5)]
    assert "hardware XID error(s) [48]" in r.problems[0]


def test_require_gpu_with_nvml_but_no_gpu() -> None:
    reading = NvmlProbe(FakeNvml(), require_gpu=True).read()
    assert (reading.nvml, reading.healthy) == (True, False)
    assert reading.problems == ("no GPU found, and this worker requires one",)
    assert NvmlProbe(FakeNvml()).read().healthy


def test_close_frees_event_sets_and_shuts_down_once() -> None:
    nvml = FakeNvml(FakeGpu(), FakeGpu())
    with NvmlProbe(nvml) as probe:
        probe.read()
    probe.close()
    assert nvml.calls["nvmlShutdown"] == 1 and len(nvml.freed) == 2
    after = probe.read()
    assert (after.nvml, after.nvml_error, after.healthy) == (False, "NVML probe closed", True)
    assert "NVML probe closed" not in repr(probe)


# -- the fake probe and helpers -----------------------------------------------------------------
def test_fake_probe_scripts() -> None:
    script = [cpu_reading(), unhealthy_reading("GPU on fire")]
    probe = FakeProbe(script)
    assert [probe.read().healthy for _ in range(4)] == [True, False, False, False]
    assert probe.reads == 4
    by_n = FakeProbe(lambda n: cpu_reading() if n % 3 else unhealthy_reading(f"tick {n}"))
    assert [by_n.read().problems for _ in range(4)] == [("tick 0",), (), (), ("tick 3",)]
    default = FakeProbe()
    assert default.read() == Reading(False, "simulated: no GPU probe", [], True)
    default.close()
    assert default.closed
    with pytest.raises(ValueError, match="at least one"):
        FakeProbe([])


def test_probes_share_the_interface() -> None:
    assert isinstance(NvmlProbe(FakeNvml()), GpuProbe)
    assert isinstance(FakeProbe(), GpuProbe)


def test_a_reading_fills_a_valid_heartbeat() -> None:
    lost = GpuTelemetry(index=0, responsive=False, error="GPU is lost")
    for reading in (cpu_reading(), unhealthy_reading("lost", [lost])):
        ping = WorkerHeartbeat(
            worker_id="w1", n=0, interval_s=5.0, in_flight=0, **reading.heartbeat_fields()
        )
        assert (ping.healthy, ping.nvml, ping.gpus) == (reading.healthy, reading.nvml, reading.gpus)
