"""GPU health for pings: NVML through pynvml, behind a `GpuProbe` interface.

`NvmlProbe.read()` never raises; whatever NVML does, a ping goes out and says what it saw.

- **No NVML** (no driver, no library: a CPU machine like the dev box): ``nvml=False`` with the
  reason in ``nvml_error``, no GPUs, and healthy, a healthy CPU worker, unless the probe was made
  with ``require_gpu=True`` (a GPU worker whose driver vanished must not count as up).
- **A reading is unhealthy** when any of these holds, and `Reading.problems` says which:
  1. NVML initialised but could not list the GPUs;
  2. a GPU did not answer: any NVML error while reading it (other than "not supported" or "no
     permission" for an optional metric, which just leaves that metric None) marks it
     ``responsive=False`` with the error text;
  3. a GPU's volatile uncorrected ECC error count rose since the previous reading (memory is
     corrupting data; the first reading is the baseline, so errors from before the worker
     started do not condemn every ping);
  4. a GPU reported a new XID critical error of a hardware kind (`HARDWARE_XIDS`: double-bit
     ECC, fallen off the bus, NVLink, GSP and microcontroller failures). XIDs that an
     application causes (13, 31, 43: a faulting kernel) are counted in ``xid_errors`` but do not
     make the machine unhealthy;
  5. ``require_gpu`` is set and NVML is missing or sees no GPU.
  Temperature and power are reported, not judged: a hot GPU throttles, it does not lie.

NVML calls block, and can hang on a lost GPU: call `read` from a thread
(``await asyncio.to_thread(probe.read)``), one reader at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import pynvml

from jetgrid.events.workers import GpuTelemetry

__all__ = [
    "HARDWARE_XIDS",
    "FakeProbe",
    "GpuProbe",
    "NvmlProbe",
    "Reading",
    "cpu_reading",
    "unhealthy_reading",
]

# XIDs that mean the hardware (or its firmware) failed, per NVIDIA's XID catalogue: 48 double-bit
# ECC, 62 microcontroller halt, 64 ECC retirement/remap failure, 74 NVLink, 79 fallen off the bus,
# 92 high single-bit ECC rate, 94/95 contained/uncontained ECC, 119/120 GSP timeout/error.
HARDWARE_XIDS = frozenset({48, 62, 64, 74, 79, 92, 94, 95, 119, 120})
_MAX_EVENTS_PER_READ = 256
_MB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Reading:
    """What one probe read saw; `problems` says why it is unhealthy (empty when healthy)."""

    nvml: bool
    nvml_error: str | None
    gpus: list[GpuTelemetry] = field(default_factory=list)
    healthy: bool = True
    problems: tuple[str, ...] = ()

    def heartbeat_fields(self) -> dict[str, Any]:
        """The WorkerHeartbeat fields this reading fills: nvml, nvml_error, gpus, healthy."""
        return {
            "nvml": self.nvml,
            "nvml_error": self.nvml_error,
            "gpus": list(self.gpus),
            "healthy": self.healthy,
        }


def cpu_reading(reason: str | None = "no NVML on this machine") -> Reading:
    """A healthy CPU-only reading."""
    return Reading(nvml=False, nvml_error=reason, gpus=[], healthy=True)


def unhealthy_reading(problem: str, gpus: Sequence[GpuTelemetry] = ()) -> Reading:
    """An unhealthy reading (for fakes and simulations)."""
    return Reading(
        nvml=bool(gpus), nvml_error=None, gpus=list(gpus), healthy=False, problems=(problem,)
    )


@runtime_checkable
class GpuProbe(Protocol):
    """Anything that can tell a worker's GPU health for one ping."""

    def read(self) -> Reading: ...

    def close(self) -> None: ...


def _text(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:  # NVMLError.__str__ may call into a library that is not there
        text = ""
    return text or type(exc).__name__


def _decode(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class _GpuFailed(Exception):
    def __init__(self, call: str, exc: BaseException) -> None:
        super().__init__(f"{call}: {_text(exc)}")


class NvmlProbe:
    """Reads every GPU through NVML; initialises NVML once, on the first read.

    `nvml` is the pynvml module, or an object with the same names (tests inject one that
    raises pynvml's error classes: the fake of a GPU on a machine that has none).
    """

    def __init__(
        self,
        nvml: Any = None,
        *,
        require_gpu: bool = False,
        hardware_xids: frozenset[int] = HARDWARE_XIDS,
        watch_xids: bool = True,
    ) -> None:
        self._nvml = pynvml if nvml is None else nvml
        self.require_gpu = require_gpu
        self.hardware_xids = hardware_xids
        self.watch_xids = watch_xids
        self._started = False
        self._ready = False
        self._closed = False
        self._init_error: str | None = None
        self._ecc: dict[str, int] = {}
        self._xid_sets: dict[int, Any] = {}
        self._xid_counts: dict[int, int] = {}
        n = self._nvml
        self._error: type[BaseException] = getattr(n, "NVMLError", Exception)
        self._timeout: tuple[type[BaseException], ...] = tuple(
            getattr(n, name) for name in ("NVMLError_Timeout",) if hasattr(n, name)
        )
        self._unavailable: tuple[type[BaseException], ...] = tuple(
            getattr(n, name)
            for name in (
                "NVMLError_NotSupported",
                "NVMLError_NoPermission",
                "NVMLError_FunctionNotFound",
            )
            if hasattr(n, name)
        )

    def __repr__(self) -> str:
        state = "ready" if self._ready else (self._init_error or "not started")
        return f"<NvmlProbe {state} gpus_watched={len(self._xid_counts)}>"

    @property
    def available(self) -> bool:
        """Whether NVML initialised (False before the first read)."""
        return self._ready

    def __enter__(self) -> NvmlProbe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- lifecycle ------------------------------------------------------------------------------
    def _start(self) -> None:
        self._started = True
        n = self._nvml
        try:
            n.nvmlInit()
        except Exception as exc:  # no library, no driver, or anything else: a CPU machine
            self._init_error = f"NVML unavailable: {_text(exc)}"
            return
        self._ready = True
        if not self.watch_xids:
            return
        try:
            count = n.nvmlDeviceGetCount()
        except self._error:
            return  # read() reports it
        for i in range(count):
            es = None
            try:
                es = n.nvmlEventSetCreate()
                n.nvmlDeviceRegisterEvents(
                    n.nvmlDeviceGetHandleByIndex(i), n.nvmlEventTypeXidCriticalError, es
                )
            except Exception:  # XIDs not obtainable for this GPU: xid_errors stays None
                if es is not None:
                    self._free(es)
                continue
            self._xid_sets[i] = es
            self._xid_counts[i] = 0

    def _free(self, es: Any) -> None:
        try:
            self._nvml.nvmlEventSetFree(es)
        except Exception:  # freeing is best effort; the process is leaving NVML anyway
            pass

    def close(self) -> None:
        """Free event sets and shut NVML down; reads after this report NVML as closed."""
        if self._closed:
            return
        self._closed = True
        for es in self._xid_sets.values():
            self._free(es)
        self._xid_sets.clear()
        if self._ready:
            try:
                self._nvml.nvmlShutdown()
            except Exception:  # shutting down a broken NVML must not break the worker's exit
                pass
        self._ready = False

    # -- reading --------------------------------------------------------------------------------
    def read(self) -> Reading:
        """One reading of every GPU; never raises."""
        try:
            return self._read()
        except Exception as exc:  # last line of defence: a ping must go out whatever NVML did
            problem = f"NVML probe failed: {_text(exc)}"
            return Reading(self._ready, problem, [], healthy=False, problems=(problem,))

    def _read(self) -> Reading:
        if self._closed:
            return self._no_nvml("NVML probe closed")
        if not self._started:
            self._start()
        if not self._ready:
            return self._no_nvml(self._init_error or "NVML unavailable")
        try:
            count = self._nvml.nvmlDeviceGetCount()
        except self._error as exc:
            problem = f"nvmlDeviceGetCount: {_text(exc)}"
            return Reading(True, problem, [], healthy=False, problems=(problem,))
        gpus: list[GpuTelemetry] = []
        problems: list[str] = []
        for i in range(count):
            gpu, found = self._read_gpu(i)
            gpus.append(gpu)
            problems.extend(found)
        if self.require_gpu and not gpus:
            problems.append("no GPU found, and this worker requires one")
        return Reading(True, None, gpus, healthy=not problems, problems=tuple(problems))

    def _no_nvml(self, reason: str) -> Reading:
        if self.require_gpu:
            problem = f"{reason}, and this worker requires a GPU"
            return Reading(False, reason, [], healthy=False, problems=(problem,))
        return Reading(False, reason, [], healthy=True)

    def _call(self, name: str, *args: Any, optional: bool = True) -> Any:
        try:
            return getattr(self._nvml, name)(*args)
        except Exception as exc:
            if optional and isinstance(exc, self._unavailable):
                return None  # this GPU does not offer the metric: not a failure
            raise _GpuFailed(name, exc) from exc

    def _read_gpu(self, i: int) -> tuple[GpuTelemetry, list[str]]:
        n = self._nvml
        got: dict[str, Any] = {"index": i}
        try:
            h = self._call("nvmlDeviceGetHandleByIndex", i, optional=False)
            got["uuid"] = _decode(self._call("nvmlDeviceGetUUID", h, optional=False))
            got["name"] = _decode(self._call("nvmlDeviceGetName", h, optional=False))
            mem = self._call("nvmlDeviceGetMemoryInfo", h)
            if mem is not None:
                got["memory_used_mb"] = round(mem.used / _MB, 1)
                got["memory_total_mb"] = round(mem.total / _MB, 1)
            util = self._call("nvmlDeviceGetUtilizationRates", h)
            if util is not None:
                got["utilization_pct"] = float(util.gpu)
            temp = self._call("nvmlDeviceGetTemperature", h, n.NVML_TEMPERATURE_GPU)
            if temp is not None:
                got["temperature_c"] = float(temp)
            power = self._call("nvmlDeviceGetPowerUsage", h)
            if power is not None:
                got["power_w"] = round(power / 1000.0, 1)
            ecc = self._call(
                "nvmlDeviceGetTotalEccErrors",
                h,
                n.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
                n.NVML_VOLATILE_ECC,
            )
            if ecc is not None:
                got["ecc_errors"] = int(ecc)
            xids = self._drain_xids(i)
        except Exception as exc:  # one GPU failing must not take the others' readings along
            text = _text(exc)
            where = f"GPU {i}" + (f" ({got['uuid']})" if "uuid" in got else "")
            return (
                GpuTelemetry(**got, responsive=False, error=text),
                [f"{where} did not answer NVML: {text}"],
            )
        problems = []
        key = got.get("uuid") or str(i)
        if "ecc_errors" in got:
            before = self._ecc.get(key)
            if before is not None and got["ecc_errors"] > before:
                problems.append(
                    f"GPU {i} ({key}): uncorrected ECC errors rose from {before} to "
                    f"{got['ecc_errors']}"
                )
            self._ecc[key] = got["ecc_errors"]
        if xids is not None:
            total, new = xids
            got["xid_errors"] = total
            bad = sorted({x for x in new if x in self.hardware_xids})
            if bad:
                problems.append(f"GPU {i} ({key}): hardware XID error(s) {bad}")
        return GpuTelemetry(**got), problems

    def _drain_xids(self, i: int) -> tuple[int, list[int]] | None:
        """(total XID critical events since the probe started, the new ones), or None."""
        es = self._xid_sets.get(i)
        if es is None:
            return None
        n = self._nvml
        new: list[int] = []
        for _ in range(_MAX_EVENTS_PER_READ):
            try:
                data = n.nvmlEventSetWait(es, 0)
            except self._timeout:
                break  # no more events pending
            except Exception as exc:
                raise _GpuFailed("nvmlEventSetWait", exc) from exc
            if data.eventType & n.nvmlEventTypeXidCriticalError:
                new.append(int(data.eventData))
        self._xid_counts[i] += len(new)
        return self._xid_counts[i], new


class FakeProbe:
    """A scripted probe: readings from a list (the last repeats) or from ``script(n)``."""

    def __init__(self, script: Sequence[Reading] | Callable[[int], Reading] | None = None) -> None:
        if script is not None and not callable(script) and not script:
            raise ValueError("FakeProbe needs at least one reading.")
        self._script = script
        self.reads = 0
        self.closed = False

    def __repr__(self) -> str:
        return f"<FakeProbe reads={self.reads}>"

    def read(self) -> Reading:
        """The next scripted reading (a healthy CPU reading when unscripted)."""
        n = self.reads
        self.reads += 1
        if self._script is None:
            return cpu_reading("simulated: no GPU probe")
        if callable(self._script):
            return self._script(n)
        return self._script[min(n, len(self._script) - 1)]

    def close(self) -> None:
        self.closed = True
