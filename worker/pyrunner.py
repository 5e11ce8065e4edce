"""The child process of the python backend: runs one remote function and writes its result.

Run as ``python -I pyrunner.py RESULT_FD``, in a fresh process per job, by
worker/backends/python.py (inside the sandbox of worker/sandbox.py). It reads the request (JSON)
from stdin and writes the result (JSON) to the inherited file descriptor RESULT_FD, so it needs
no writable file of the host. It imports nothing of jetgrid (only the standard library and
cloudpickle), limits its own address space (RLIMIT_AS) before touching the job, puts the job's
dependency directory first on sys.path, defines the function from its source, calls it with the
unpickled arguments (awaiting it if it is a coroutine function) and writes::

    {"ok": true, "result": <base64 cloudpickle of the return value>}
    {"ok": false, "error": {"type", "message", "traceback", "pickled": <base64 or null>}}

Whatever the function prints goes to this process's stdout/stderr, which the worker captures.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import json
import linecache
import sys
import traceback
from collections.abc import Awaitable
from typing import Any


async def _awaited(value: Awaitable[Any]) -> Any:
    """asyncio.run takes a coroutine; a function may return any awaitable."""
    return await value


def _limit_memory(mb: int | None) -> None:
    if not mb:
        return
    import resource

    limit = int(mb) * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _pickle(obj: Any) -> str:
    import cloudpickle

    return base64.b64encode(cloudpickle.dumps(obj)).decode()


def _error(exc: BaseException, memory_mb: int | None = None) -> dict[str, Any]:
    message = str(exc)
    if isinstance(exc, MemoryError) and memory_mb:
        message = (
            f"the function ran out of its memory limit of {memory_mb} MiB; ask for more with "
            "memory_mb (at most the worker's --python-memory-mb) or use less"
        )
    try:
        pickled: str | None = _pickle(exc)
    except Exception:  # an exception that does not pickle still reports its text
        pickled = None
    return {
        "type": type(exc).__qualname__,
        "module": type(exc).__module__,
        "message": message,
        # The runner's own frame is noise: start at the function.
        "traceback": "".join(
            traceback.format_exception(
                type(exc), exc, exc.__traceback__ and exc.__traceback__.tb_next
            )
        ),
        "pickled": pickled,
    }


def run(request: dict[str, Any]) -> dict[str, Any]:
    _limit_memory(request.get("memory_mb"))
    for path in reversed(request.get("sys_path") or []):
        sys.path.insert(0, path)
    try:
        import cloudpickle

        args, kwargs = cloudpickle.loads(base64.b64decode(request["args"]))
        name = request["function"]
        namespace: dict[str, Any] = {"__name__": "__jetgrid_remote__"}
        filename = f"<remote function {name}>"
        source = request["source"]
        # Tracebacks quote the function's lines, as they would for a file.
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        exec(compile(source, filename, "exec"), namespace)
        fn = namespace[name]
        value = fn(*args, **kwargs)
        if inspect.isawaitable(value):
            value = asyncio.run(_awaited(value))
        return {"ok": True, "result": _pickle(value)}
    except BaseException as exc:  # the function's own failure is the result
        return {"ok": False, "error": _error(exc, request.get("memory_mb"))}


def main(argv: list[str]) -> int:
    result_fd = int(argv[1])
    request = json.load(sys.stdin)
    sys.stdin.close()
    result = run(request)
    sys.stdout.flush()
    sys.stderr.flush()
    with open(result_fd, "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
