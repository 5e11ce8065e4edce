"""Remote Python functions end to end: @jetgrid.remote -> NATS -> an --allow-python worker."""

from __future__ import annotations

import asyncio
import zipfile
from pathlib import Path

import pytest
from nats.js.errors import NotFoundError

import jetgrid
from jetgrid.coordinator.settings import Settings
from jetgrid.functions import function_source
from jetgrid.worker.backends import EchoBackend
from jetgrid.worker.backends.python import PythonBackend, WithPython, env_hash

pytestmark = pytest.mark.integration


def python_worker_backend(tmp_path: Path, **kw) -> WithPython:
    return WithPython(EchoBackend(), PythonBackend(tmp_path / "worker-data", **kw))


def test_the_source_travels_without_decorators() -> None:
    @jetgrid.remote(pool="standard")
    def add(a, b=1):
        return a + b

    assert function_source(add.fn) == "def add(a, b=1):\n    return a + b\n"
    assert add.local(1, b=2) == 3


async def test_a_remote_function_returns_its_value_and_output(
    streams: Settings, start_worker, outcomes, tmp_path
) -> None:
    @jetgrid.remote(settings=streams, timeout_s=60)
    def stats(xs, *, scale=1):
        import statistics
        import sys

        print("computing", len(xs))
        print("a warning", file=sys.stderr)
        return {"mean": statistics.mean(xs) * scale, "fn": lambda v: v * 2}

    await start_worker("python", backend=python_worker_backend(tmp_path))
    result = await stats.call([1, 2, 3, 6], scale=10)
    assert result.value["mean"] == 30 and result.value["fn"](4) == 8  # cloudpickle both ways
    assert result.stdout == "computing 4\n" and result.stderr == "a warning\n"
    # The SDK and this collector each see `completed` on their own subscription: wait for ours.
    await outcomes.wait_terminal(result.job_id)
    # `started` only if the run outlasted started_after_s; the claim is in the log either way
    assert outcomes.names(result.job_id)[-1] == "completed"
    assert len(outcomes.claims(result.job_id)) == 1

    @jetgrid.remote(settings=streams)
    async def coro(x):
        import asyncio

        await asyncio.sleep(0)
        return x + 1

    assert await coro(41) == 42


async def test_a_remote_exception_is_raised_with_its_traceback(
    streams: Settings, start_worker, tmp_path
) -> None:
    @jetgrid.remote(settings=streams)
    def explode(n):
        print("about to fail")
        raise ValueError(f"bad n: {n}")

    await start_worker("python", backend=python_worker_backend(tmp_path))
    with pytest.raises(jetgrid.RemoteError) as err:
        await explode(7)
    e = err.value
    assert (e.type, e.message) == ("ValueError", "bad n: 7")
    assert "in explode" in e.traceback and 'raise ValueError(f"bad n: {n}")' in e.traceback
    assert e.stdout == "about to fail\n"
    assert isinstance(e.__cause__, ValueError) and str(e.__cause__) == "bad n: 7"


async def test_time_and_memory_limits(streams: Settings, start_worker, tmp_path) -> None:
    @jetgrid.remote(settings=streams, timeout_s=1)
    def forever():
        import time

        time.sleep(60)

    @jetgrid.remote(settings=streams, memory_mb=256)
    def greedy():
        return len(bytearray(2 * 2**30))

    await start_worker("python", backend=python_worker_backend(tmp_path), concurrency=2)
    with pytest.raises(jetgrid.RemoteJobFailed) as err:
        await forever()
    assert (err.value.status, err.value.error_type) == ("failed", "timeout")
    assert "timeout of 1 s" in err.value.reason
    with pytest.raises(jetgrid.RemoteError) as mem:
        await greedy()
    assert mem.value.type == "MemoryError"


async def test_only_python_workers_take_python_jobs(
    streams: Settings, nc, start_worker, outcomes, tmp_path
) -> None:
    @jetgrid.remote(settings=streams)
    def where():
        return "ran"

    plain = await start_worker("echo", worker_id="plain")
    call = asyncio.create_task(where.call())
    js = nc.jetstream()
    subject = streams.subjects.submit("standard", "python")

    async def stored() -> None:
        while True:
            try:
                await js.get_last_msg(streams.streams.jobs, subject)
                return
            except NotFoundError:
                await asyncio.sleep(0.02)

    await asyncio.wait_for(stored(), 10)  # the job waits on <prefix>.jobs.standard.python
    await start_worker("python", "echo", worker_id="py", backend=python_worker_backend(tmp_path))
    result = await asyncio.wait_for(call, 20)
    assert result.value == "ran"
    assert outcomes.events[result.job_id][0].event.worker_id == "py"
    # the plain worker binds only echo's consumers (one per priority), never python's
    assert plain.counters.claimed == 0 and {p.consumer for p in plain.pulls.pullers} == {
        "pool-standard-echo",
        "pool-standard-echo_high",
        "pool-standard-echo_low",
    }


def tiny_wheel(where: Path) -> Path:
    """A one-module wheel made here, so installing it needs no network."""
    path = where / "jgtiny-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("jgtiny.py", "ANSWER = 42\n")
        info = "jgtiny-1.0.dist-info"
        z.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: jgtiny\nVersion: 1.0\n")
        z.writestr(
            f"{info}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        z.writestr(f"{info}/RECORD", "")
    return path


async def test_dependencies_install_once_into_a_cached_environment(
    streams: Settings, start_worker, tmp_path
) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    tiny_wheel(wheels)

    @jetgrid.remote(settings=streams, dependencies=["jgtiny==1.0"])
    def answer():
        import jgtiny

        return jgtiny.ANSWER

    # The install runs sandboxed too: it sees the operator's --find-links folder, nothing else.
    pip_args = ("--no-index", "--no-deps", "--find-links", str(wheels))
    backend = python_worker_backend(tmp_path, pip_args=pip_args)
    await start_worker("python", backend=backend)
    assert await answer() == 42
    env = tmp_path / "worker-data" / "python-envs" / env_hash(["jgtiny==1.0"])
    marker = env / ".jetgrid-ready"
    first = marker.stat().st_mtime_ns
    assert await answer() == 42
    assert marker.stat().st_mtime_ns == first  # the second call reused the environment

    @jetgrid.remote(settings=streams, dependencies=["jgtiny-does-not-exist==9"])
    def missing():
        return 1

    with pytest.raises(jetgrid.RemoteJobFailed) as err:
        await missing()
    assert err.value.error_type == "dependencies"
