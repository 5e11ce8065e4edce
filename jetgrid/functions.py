"""Remote Python functions: ``@jetgrid.remote`` runs a function on a jetgrid worker.

This module is exported as ``jetgrid.remote`` (and ``jetgrid.RemoteError``, ...).

    import jetgrid

    @jetgrid.remote(pool="heavy", dependencies=["numpy==2.1.*"], timeout_s=120)
    def norm(xs):
        import numpy as np          # imports go inside: only the function's source travels
        return float(np.linalg.norm(xs))

    value = await norm([3, 4])              # 5.0, computed on a worker
    result = await norm.call([3, 4])        # RemoteResult: value, stdout, stderr, job_id
    norm.local([3, 4])                      # the plain function, here

The function's source (``inspect.getsource``, decorators stripped) and its arguments
(cloudpickle, base64) travel as a job of kind ``python`` and model ``python`` on
``<prefix>.jobs.<pool>.python``; only workers started with ``--allow-python`` take it (see
worker/backends/python.py for the wire format and the limits). The call waits for the job's
terminal event and returns the function's value, or raises `RemoteError` carrying the remote
exception's type, message and traceback (and the exception itself as ``__cause__`` when it
unpickles here); stdout and stderr are in the RemoteResult and on the error. A job that fails
(timeout, crash, dependencies) raises `RemoteJobFailed`.

The function must be self-contained: a module-level def whose globals are not shipped (import
inside it; pass data as arguments). Connection settings come from ``settings=`` or, like the
CLI, from the ``JETGRID_*`` environment (JETGRID_NATS_URL, credentials, prefixes). Submitting
needs publish permission on the python subject: the gateway refuses kind ``python`` over HTTP
unless enabled, and NATS permissions decide who may publish it directly.
"""

from __future__ import annotations

import ast
import base64
import functools
import inspect
import os
import textwrap
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cloudpickle

from jetgrid.coordinator.routing import PYTHON_MODEL, route_job
from jetgrid.coordinator.settings import Settings
from jetgrid.events import JetgridError, JobSubmitted
from jetgrid.events.addressing import Speaker, event_name

__all__ = ["RemoteError", "RemoteFunction", "RemoteJobFailed", "RemoteResult", "remote"]


class RemoteError(JetgridError):
    """The remote function raised; `type`, `message`, `traceback` describe what it raised."""

    def __init__(self, error: dict[str, Any], stdout: str = "", stderr: str = "") -> None:
        self.type = str(error.get("type", "Exception"))
        self.message = str(error.get("message", ""))
        self.traceback = str(error.get("traceback", ""))
        self.stdout, self.stderr = stdout, stderr
        super().__init__(
            f"remote function raised {self.type}: {self.message}\n"
            f"--- remote traceback ---\n{self.traceback}"
        )


class RemoteJobFailed(JetgridError):
    """The job did not produce a result (timeout, crash, dependencies, dead, cancelled)."""

    def __init__(self, job_id: str, status: str, reason: str, error_type: str | None) -> None:
        self.job_id, self.status, self.reason, self.error_type = job_id, status, reason, error_type
        super().__init__(f"remote job {job_id} {status} ({error_type}): {reason}")


@dataclass(frozen=True)
class RemoteResult:
    value: Any
    stdout: str
    stderr: str
    job_id: str


def function_source(fn: Callable[..., Any]) -> str:
    """The source of `fn`'s def, dedented, without its decorators."""
    src = textwrap.dedent(inspect.getsource(fn))
    tree = ast.parse(src)
    node = tree.body[0]
    if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        raise TypeError(f"@jetgrid.remote needs a def, not {type(node).__name__}")
    return "\n".join(src.splitlines()[node.lineno - 1 :]) + "\n"


def pack(value: Any) -> str:
    return base64.b64encode(cloudpickle.dumps(value)).decode()


def unpack(text: str) -> Any:
    return cloudpickle.loads(base64.b64decode(text))


class RemoteFunction:
    """A function that runs on a jetgrid worker when awaited."""

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        pool: str | None,
        dependencies: Sequence[str],
        timeout_s: float | None,
        memory_mb: int | None,
        settings: Settings | None,
    ) -> None:
        self.fn = fn
        self.pool = pool
        self.dependencies = list(dependencies)
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.settings = settings
        self.source = function_source(fn)
        functools.update_wrapper(self, fn)

    def __repr__(self) -> str:
        return f"<remote {self.fn.__name__} pool={self.pool} dependencies={self.dependencies}>"

    def local(self, *args: Any, **kwargs: Any) -> Any:
        """Call the function here, not remotely."""
        return self.fn(*args, **kwargs)

    def _settings(self) -> Settings:
        return self.settings or Settings.from_env(os.environ)

    def job(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], settings: Settings
    ) -> JobSubmitted:
        """The submission for one call (pure: no I/O)."""
        pool = route_job(settings.pool_configs(), model=PYTHON_MODEL, kind="python", pool=self.pool)
        inp: dict[str, Any] = {
            "function": self.fn.__name__,
            "source": self.source,
            "args": pack((args, kwargs)),
            "dependencies": self.dependencies,
        }
        if self.memory_mb:
            inp["memory_mb"] = self.memory_mb
        return JobSubmitted(
            job_id=uuid.uuid4().hex,
            model=PYTHON_MODEL,
            pool=pool,
            kind="python",
            input=inp,
            timeout_s=self.timeout_s,
            submitter="jetgrid.remote",
        )

    async def call(self, *args: Any, **kwargs: Any) -> RemoteResult:
        """Run remotely; the value with the captured stdout and stderr."""
        from jetgrid.coordinator.bus import Bus

        settings = self._settings()
        job = self.job(args, kwargs, settings)
        bus = await Bus.connect(settings, name=f"jetgrid-remote-{self.fn.__name__}")
        try:
            async with bus.follow_job(job.job_id) as follower:
                await bus.store(job, Speaker.service("remote"))
                wait = None if self.timeout_s is None else self.timeout_s + 300.0
                outcome = await follower.outcome(wait)
        finally:
            await bus.close()
        if outcome is None:
            raise TimeoutError(f"No outcome for remote job {job.job_id} within {wait} s.")
        return self._result(job.job_id, outcome.event)

    def _result(self, job_id: str, ev: Any) -> RemoteResult:
        """The value a terminal event carries, or the error it reports, raised."""
        name = event_name(ev)
        if name != "completed":
            reason = getattr(ev, "reason", None) or name
            raise RemoteJobFailed(job_id, name, reason, getattr(ev, "error_type", None))
        out = ev.output or {}
        stdout, stderr = out.get("stdout", ""), out.get("stderr", "")
        if out.get("ok"):
            return RemoteResult(unpack(out["result"]), stdout, stderr, job_id)
        error = out.get("error") or {}
        remote_exc = None
        if error.get("pickled"):
            try:
                remote_exc = unpack(error["pickled"])
            except Exception:  # its class does not exist here: the text is enough
                remote_exc = None
        raise RemoteError(error, stdout, stderr) from remote_exc

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return (await self.call(*args, **kwargs)).value


def remote(
    fn: Callable[..., Any] | None = None,
    *,
    pool: str | None = None,
    dependencies: Sequence[str] = (),
    timeout_s: float | None = None,
    memory_mb: int | None = None,
    settings: Settings | None = None,
) -> Any:
    """Decorate a function so that awaiting it runs it on a jetgrid worker (module docstring)."""

    def wrap(f: Callable[..., Any]) -> RemoteFunction:
        return RemoteFunction(
            f,
            pool=pool,
            dependencies=dependencies,
            timeout_s=timeout_s,
            memory_mb=memory_mb,
            settings=settings,
        )

    return wrap(fn) if fn is not None else wrap
