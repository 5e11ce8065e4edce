"""The python backend: remote Python functions (``@jetgrid.remote``), each in a fresh process.

Only workers started with ``--allow-python`` have it. Python jobs are submitted with kind
``python`` and model ``python``, so they sit on their own subject
``<prefix>.jobs.<pool>.python`` and consumer ``pool-<pool>-python``, which only such workers
bind: a worker without the flag never pulls one.

The job's input (written by jetgrid/functions.py, the ``jetgrid.remote`` SDK)::

    {"function": name, "source": "def name(...): ...", "args": <base64 cloudpickle of
     (args, kwargs)>, "dependencies": ["pkg==1.0", ...], "memory_mb": int?}

Each job runs in a new ``python -I`` process (worker/pyrunner.py) with the worker's own
interpreter, inside the bubblewrap sandbox of worker/sandbox.py (no network, no environment, no
host file but the interpreter, its venv and the dependency directory, read-only; its own PID
namespace). The request goes in on stdin and the result comes back on an inherited pipe, so no
host file is writable inside. Its address space is capped (RLIMIT_AS, ``memory_mb`` or the
worker's default), its wall time too (the job's ``timeout_s``, at most the worker's
``timeout_s``: at the deadline bwrap is killed, and with its namespace every process inside),
and so are stdout and stderr (``output_limit`` each) and the result (``result_limit``): more
kills the process and fails the job. Dependencies are installed once per distinct list into a
cached directory ``<data_dir>/python-envs/<hash>`` (``pip install --target``; the hash covers the
sorted list and the Python version) that goes first on the child's ``sys.path``.

The `completed` event's output::

    {"ok": true, "result": <base64 cloudpickle>, "stdout": str, "stderr": str}
    {"ok": false, "error": {"type", "module", "message", "traceback", "pickled"},
     "stdout": str, "stderr": str}

A function that raises is a *completed* job with ``ok: false`` (the job ran; the function's
exception is its result, as RunPod's FunctionResponse does); the SDK raises it. A job that runs
out of time, dies by a signal, writes or returns too much, or whose dependencies do not install
fails (error types ``timeout``, ``crashed``, ``output_limit``, ``dependencies``). stdout and
stderr keep their last 64 KiB each in the event.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jetgrid.events import ConfigError, JobSubmitted
from jetgrid.worker.backends.base import Backend, Result, RunContext
from jetgrid.worker.errors import PermanentError
from jetgrid.worker.sandbox import (
    NO_SANDBOX_ENV,
    child_env,
    find_bwrap,
    missing_bwrap_message,
    pip_env,
    sandbox_command,
)

log = logging.getLogger("jetgrid.worker.python")

PYTHON_MODEL = "python"
RUNNER = Path(__file__).resolve().parent.parent / "pyrunner.py"
OUTPUT_CAP = 64 * 1024  # kept of stdout and of stderr in the `completed` event
OUTPUT_LIMIT = 8 * 2**20  # more on stdout or on stderr fails the job
PIPES_CLOSE_S = 5.0  # after the kill, the longest wait for the child's pipes to end
RESULT_LIMIT = 768 * 2**10  # the result's JSON; the `completed` event must fit a NATS message


def env_hash(dependencies: list[str]) -> str:
    """The cache key of a dependency list (order does not matter; the Python version does)."""
    key = json.dumps([sorted(dependencies), sys.version_info[:2]])
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _tail(data: bytes) -> str:
    text = data[-OUTPUT_CAP:].decode("utf-8", "replace")
    return text if len(data) <= OUTPUT_CAP else "[...]\n" + text


class PythonBackend:
    """Runs kind-``python`` jobs in fresh sandboxed subprocesses with time, memory and output
    limits."""

    name = "python"

    def __init__(
        self,
        data_dir: Path,
        *,
        timeout_s: float = 600.0,
        memory_mb: int = 4096,
        pip_args: tuple[str, ...] = (),
        output_limit: int = OUTPUT_LIMIT,
        result_limit: int = RESULT_LIMIT,
        unsandboxed: bool = False,
    ) -> None:
        """`unsandboxed` (the operator's explicit opt-out) runs functions without bubblewrap;
        otherwise a missing bwrap is a ConfigError here, before any job is taken."""
        self.bwrap = None if unsandboxed else find_bwrap()
        if self.bwrap is None and not unsandboxed:
            raise ConfigError(missing_bwrap_message())
        if unsandboxed:
            log.warning(
                "remote Python functions run WITHOUT a sandbox (%s): any submitter can read "
                "this worker's files and reach its network",
                NO_SANDBOX_ENV,
            )
        self.output_limit = output_limit
        self.result_limit = result_limit
        self.envs_dir = Path(data_dir) / "python-envs"
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.pip_args = pip_args
        # Local folders the operator's pip_args name (--find-links DIR) are visible to installs;
        # nothing a job names is.
        self.pip_paths = [Path(a) for a in pip_args if os.path.isabs(a) and os.path.exists(a)]
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
            pip = [
                "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-input",
                "--no-cache-dir", "--target", str(tmp), *self.pip_args, *dependencies,
            ]  # fmt: skip
            log.warning("installing %s into %s", dependencies, target)
            env = pip_env(os.environ)
            if self.bwrap is None:
                cmd = [sys.executable, "-I", *pip]
            else:
                cmd = sandbox_command(
                    self.bwrap, None, pip, extra_ro=self.pip_paths, writable=[tmp],
                    network=True, env=env,
                )  # fmt: skip
            proc = await asyncio.create_subprocess_exec(
                *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL, env=env, start_new_session=True,
                cwd="/" if self.bwrap else tempfile.gettempdir(),
            )  # fmt: skip
            try:
                out, _ = await asyncio.wait_for(proc.communicate(), self.timeout_s)
            except TimeoutError:
                _kill(proc)
                await proc.wait()
                shutil.rmtree(tmp, ignore_errors=True)
                raise PermanentError(
                    f"installing dependencies {dependencies} took over {self.timeout_s:g} s",
                    error_type="dependencies",
                ) from None
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
        name = request["function"]
        env = await self.environment(request.pop("dependencies"))
        request["sys_path"] = [str(env)] if env else []
        timeout = min(job.timeout_s or self.timeout_s, self.timeout_s)
        try:
            out, err, raw, status = await self._call(
                json.dumps(request).encode(),
                [env] if env else [],
                request["memory_mb"],
                timeout,
                ctx,
            )
        except _TooMuch as exc:
            raise PermanentError(
                f"remote function {name!r} {exc.what} more than {_size(exc.limit)}, the "
                f"worker's limit; {exc.fix}",
                error_type="output_limit",
            ) from None
        except _TimedOut:
            if ctx.cancelled.is_set():
                raise PermanentError("cancelled while running", error_type="cancelled") from None
            raise PermanentError(
                f"remote function {name!r} timed out after {timeout:g} s",
                error_type="timeout",
            ) from None
        stdout, stderr = _tail(out), _tail(err)
        try:
            result = json.loads(raw) if raw else None
        except ValueError:
            result = None
        if not isinstance(result, dict) or status != 0:
            raise PermanentError(
                f"remote function {name!r} crashed (exit {status}): {stderr[-2000:]}",
                error_type="crashed",
            )
        result.update(stdout=stdout, stderr=stderr)
        return Result(output=result, usage={"duration_limit_s": timeout})

    def _argv(self, result_fd: int, dependencies: list[Path], memory_mb: int) -> list[str]:
        if self.bwrap is None:
            return [sys.executable, "-I", str(RUNNER), str(result_fd)]
        if not os.path.exists(self.bwrap):
            raise PermanentError(missing_bwrap_message(), error_type="sandbox")
        return sandbox_command(
            self.bwrap, RUNNER, [str(result_fd)], extra_ro=dependencies,
            scratch_bytes=memory_mb * 2**20,
        )  # fmt: skip

    async def _call(
        self,
        request: bytes,
        dependencies: list[Path],
        memory_mb: int,
        limit_s: float,
        ctx: RunContext,
    ) -> tuple[bytes, bytes, bytes, int]:
        """Run the runner on `request`: its stdout, stderr, result and exit status, each
        stream read up to its limit. The process tree is killed when this returns or raises."""
        r, w = os.pipe()
        try:
            proc = await asyncio.create_subprocess_exec(
                *self._argv(w, dependencies, memory_mb), stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                cwd="/" if self.bwrap else tempfile.gettempdir(), env=child_env(),
                start_new_session=True, pass_fds=(w,),
            )  # fmt: skip
        except BaseException:
            os.close(r)
            raise
        finally:
            os.close(w)
        results = asyncio.StreamReader(limit=2**16)
        loop = asyncio.get_running_loop()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(results), os.fdopen(r, "rb", buffering=0)
        )
        assert proc.stdout is not None and proc.stderr is not None
        stdout, stderr = proc.stdout, proc.stderr

        def stop() -> None:
            _kill(proc)

        async def collect() -> tuple[bytes, bytes, bytes, int]:
            feed = asyncio.ensure_future(_feed(proc, request))
            try:
                out, err, res = await asyncio.gather(
                    _read(stdout, self.output_limit, "wrote to stdout", _PRINT_LESS, stop),
                    _read(stderr, self.output_limit, "wrote to stderr", _PRINT_LESS, stop),
                    _read(results, self.result_limit, "returned", _RETURN_LESS, stop),
                )
                status = await proc.wait()
            finally:
                feed.cancel()
            return out, err, res, status

        collecting = asyncio.ensure_future(collect())
        cancel = asyncio.ensure_future(ctx.cancelled.wait())
        try:
            done, _ = await asyncio.wait(
                {collecting, cancel}, timeout=limit_s, return_when=asyncio.FIRST_COMPLETED
            )
            if collecting not in done:
                raise _TimedOut()
            return collecting.result()
        finally:
            cancel.cancel()
            _kill(proc)  # the sandbox's init with it, and with that every process inside
            # Once the namespace is gone its pipes end and the readers return; only an
            # unsandboxed run's detached process can hold them open, and is left to hold them.
            with contextlib.suppress(BaseException):
                await asyncio.wait({collecting}, timeout=PIPES_CLOSE_S)
            collecting.cancel()
            transport.close()


class _TimedOut(Exception):
    pass


class _TooMuch(Exception):
    def __init__(self, what: str, limit: int, fix: str) -> None:
        self.what, self.limit, self.fix = what, limit, fix


_PRINT_LESS = "print less, or return the data as the result"
_RETURN_LESS = "return less (put large data in shared storage and return its address)"


def _size(n: int) -> str:
    return f"{n / 2**20:g} MiB" if n >= 2**20 else f"{n / 2**10:g} KiB"


async def _feed(proc: asyncio.subprocess.Process, request: bytes) -> None:
    assert proc.stdin is not None
    with contextlib.suppress(Exception):  # the child may exit without reading it all
        proc.stdin.write(request)
        await proc.stdin.drain()
    with contextlib.suppress(Exception):
        proc.stdin.close()


async def _read(
    stream: asyncio.StreamReader, limit: int, what: str, fix: str, stop: Callable[[], None]
) -> bytes:
    """Everything up to EOF. Past `limit` bytes: `stop()` the child, read on to EOF (a pipe
    left unread never ends, and neither would the process's transport), then _TooMuch."""
    data = bytearray()
    over = False
    while chunk := await stream.read(2**16):
        if over:
            continue
        data += chunk
        if len(data) > limit:
            over = True
            data.clear()
            stop()
    if over:
        raise _TooMuch(what, limit, fix)
    return bytes(data)


def _kill(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL the process group of a child not yet reaped (once reaped, its id may be reused)."""
    if proc.returncode is not None:
        return
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
