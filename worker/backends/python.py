"""The python backend: remote Python functions (``@jetgrid.remote``), each in a fresh process.

Only workers started with ``--allow-python`` have it. Python jobs are submitted with kind
``python`` and model ``python``, so they sit on their own subject
``<prefix>.jobs.<pool>.python`` and consumer ``pool-<pool>-python``, which only such workers
bind: a worker without the flag never pulls one.

The job's input (written by jetgrid/functions.py, the ``jetgrid.remote`` SDK)::

    {"function": name, "source": "def name(...): ...", "args": <base64 cloudpickle of
     (args, kwargs)>, "dependencies": ["pkg==1.0", ...], "memory_mb": int?}

Each job runs in a new ``python -I`` process (worker/pyrunner.py) with the worker's own
interpreter, its address space capped (RLIMIT_AS, ``memory_mb`` or the worker's default) and its
wall time capped (the job's ``timeout_s``, at most the worker's ``timeout_s``; the whole process
group is killed at the deadline). Dependencies are installed once per distinct list into a cached
directory ``<data_dir>/python-envs/<hash>`` (``pip install --target``; the hash covers the sorted
list and the Python version) that goes first on the child's ``sys.path``.

The `completed` event's output::

    {"ok": true, "result": <base64 cloudpickle>, "stdout": str, "stderr": str}
    {"ok": false, "error": {"type", "module", "message", "traceback", "pickled"},
     "stdout": str, "stderr": str}

A function that raises is a *completed* job with ``ok: false`` (the job ran; the function's
exception is its result, as RunPod's FunctionResponse does); the SDK raises it. A job that runs
out of time, dies by a signal, or whose dependencies do not install fails (error types
``timeout``, ``crashed``, ``dependencies``). stdout and stderr keep their last 64 KiB each.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from jetgrid.events import JobSubmitted
from jetgrid.worker.backends.base import Backend, Result, RunContext
from jetgrid.worker.errors import PermanentError

log = logging.getLogger("jetgrid.worker.python")

PYTHON_MODEL = "python"
RUNNER = Path(__file__).resolve().parent.parent / "pyrunner.py"
OUTPUT_CAP = 64 * 1024


def env_hash(dependencies: list[str]) -> str:
    """The cache key of a dependency list (order does not matter; the Python version does)."""
    key = json.dumps([sorted(dependencies), sys.version_info[:2]])
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _tail(data: bytes) -> str:
    text = data[-OUTPUT_CAP:].decode("utf-8", "replace")
    return text if len(data) <= OUTPUT_CAP else "[...]\n" + text


class PythonBackend:
    """Runs kind-``python`` jobs in fresh subprocesses with time and memory limits."""

    name = "python"

    def __init__(
        self,
        data_dir: Path,
        *,
        timeout_s: float = 600.0,
        memory_mb: int = 4096,
        pip_args: tuple[str, ...] = (),
    ) -> None:
        self.envs_dir = Path(data_dir) / "python-envs"
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.pip_args = pip_args
        self._locks: dict[str, asyncio.Lock] = {}

    def serves(self, model: str) -> bool:
        return model == PYTHON_MODEL

    async def close(self) -> None:
        return None

    # -- dependencies -----------------------------------------------------------------------
    async def environment(self, dependencies: list[str]) -> Path | None:
        """The cached directory holding `dependencies`, installing them on first use."""
        if not dependencies:
            return None
        key = env_hash(dependencies)
        target = self.envs_dir / key
        async with self._locks.setdefault(key, asyncio.Lock()):
            if (target / ".jetgrid-ready").exists():
                return target
            self.envs_dir.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=self.envs_dir))
            cmd = [
                sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                "--no-input", "--target", str(tmp), *self.pip_args, *dependencies,
            ]  # fmt: skip
            log.warning("installing %s into %s", dependencies, target)
            proc = await asyncio.create_subprocess_exec(
                *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
            )
            out, _ = await proc.communicate()
            if proc.returncode != 0:
                shutil.rmtree(tmp, ignore_errors=True)
                raise PermanentError(
                    f"installing dependencies {dependencies} failed: {_tail(out)[-2000:]}",
                    error_type="dependencies",
                )
            (tmp / ".jetgrid-ready").write_text(json.dumps(dependencies))
            shutil.rmtree(target, ignore_errors=True)
            await asyncio.to_thread(os.replace, tmp, target)
            return target

    # -- running ----------------------------------------------------------------------------
    def _request(self, job: JobSubmitted) -> dict[str, Any]:
        inp = job.input or {}
        missing = [k for k in ("function", "source", "args") if not isinstance(inp.get(k), str)]
        if missing:
            raise PermanentError(
                f"a python job needs string fields {missing} in its input", error_type="bad_input"
            )
        deps = inp.get("dependencies") or []
        if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
            raise PermanentError("'dependencies' must be a list of strings", error_type="bad_input")
        memory = inp.get("memory_mb")
        if memory is not None and (not isinstance(memory, int) or memory <= 0):
            raise PermanentError("'memory_mb' must be a positive integer", error_type="bad_input")
        return {
            "function": inp["function"],
            "source": inp["source"],
            "args": inp["args"],
            "dependencies": deps,
            "memory_mb": min(memory or self.memory_mb, self.memory_mb),
        }

    async def run(self, job: JobSubmitted, ctx: RunContext) -> Result:
        if job.kind != "python" or job.model != PYTHON_MODEL:
            raise PermanentError(
                "the python backend runs only kind 'python' jobs of model 'python'",
                error_type="bad_input",
            )
        request = self._request(job)
        env = await self.environment(request.pop("dependencies"))
        request["sys_path"] = [str(env)] if env else []
        timeout = min(job.timeout_s or self.timeout_s, self.timeout_s)
        with tempfile.TemporaryDirectory(prefix="jetgrid-py-") as tmp:
            req_path, res_path = Path(tmp) / "request.json", Path(tmp) / "result.json"
            req_path.write_text(json.dumps(request))
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-I", str(RUNNER), str(req_path), str(res_path),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, cwd=tmp, start_new_session=True,
            )  # fmt: skip
            communicate = asyncio.ensure_future(proc.communicate())
            cancel = asyncio.ensure_future(ctx.cancelled.wait())
            try:
                done, _ = await asyncio.wait(
                    {communicate, cancel}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                cancel.cancel()
                if not communicate.done():
                    _kill(proc)
                    with contextlib.suppress(Exception):
                        await communicate
            if communicate not in done:
                if ctx.cancelled.is_set():
                    raise PermanentError("cancelled while running", error_type="cancelled")
                raise PermanentError(
                    f"remote function {request['function']!r} timed out after {timeout:g} s",
                    error_type="timeout",
                )
            out, err = communicate.result()
            stdout, stderr = _tail(out), _tail(err)
            if proc.returncode != 0 or not res_path.exists():
                raise PermanentError(
                    f"remote function {request['function']!r} crashed (exit "
                    f"{proc.returncode}): {stderr[-2000:]}",
                    error_type="crashed",
                )
            result = json.loads(res_path.read_text())
        result.update(stdout=stdout, stderr=stderr)
        return Result(output=result, usage={"duration_limit_s": timeout})


def _kill(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


class WithPython:
    """A backend plus the python backend: kind-``python`` jobs go to the latter, the rest to
    `inner`. Everything else (inventory, health, start) is `inner`'s."""

    def __init__(self, inner: Backend, python: PythonBackend) -> None:
        self.inner = inner
        self.python = python
        self.name = f"{inner.name}+python"

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def serves(self, model: str) -> bool:
        return model == PYTHON_MODEL or self.inner.serves(model)

    def has(self, model: str) -> bool:
        if model == PYTHON_MODEL:
            return True
        has = getattr(self.inner, "has", None)
        return True if has is None else bool(has(model))

    def is_warm(self, model: str) -> bool:
        if model == PYTHON_MODEL:
            return True
        is_warm = getattr(self.inner, "is_warm", None)
        return True if is_warm is None else bool(is_warm(model))

    async def run(self, job: JobSubmitted, ctx: RunContext) -> Result:
        if job.kind == "python" or job.model == PYTHON_MODEL:
            return await self.python.run(job, ctx)
        return await self.inner.run(job, ctx)

    async def close(self) -> None:
        await self.python.close()
        await self.inner.close()
