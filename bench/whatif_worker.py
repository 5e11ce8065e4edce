"""`jetgrid worker` with one experimental change patched in, for A/B runs of bench/roundtrip.py.

NOT production code. Each variant monkeypatches worker.agent.Worker in this process only, to
measure what a change in worker/ would buy before anyone makes it there. Run it through the
benchmark, which starts it in place of `jetgrid worker`:

    .venv/bin/python bench/roundtrip.py --worker-variant no-lifecycle

With ``--cpu-profile FILE`` (what ``roundtrip.py --profile DIR`` passes) the worker runs under
cProfile with a CPU-time clock, so time spent waiting, or descheduled by other processes on a
busy machine, is not counted.

Variants:
    none            nothing patched (checks that the wrapper itself costs nothing)
    no-claimed      `claimed` is not published; `started` still is (one stored event saved)
    no-lifecycle    neither `claimed` nor `started` is published: only the terminal event is
                    stored. The upper bound of deferring both until a job has run for a while
                    (a short job then stores just `completed`).
    no-keepalive    no per-job +WPI task (what one shared ticker for all held jobs would save)

A variant breaks loudly (AttributeError at start) if worker/agent.py no longer has the method
it patches.
"""

from __future__ import annotations

import cProfile
import sys
import time
from collections.abc import Callable
from typing import Any

VARIANTS = ("none", "no-claimed", "no-lifecycle", "no-keepalive")


def _skip_events(names: set[str]) -> Callable[[Any], None]:
    def patch(worker_cls: Any) -> None:
        original = worker_cls._job_event

        async def _job_event(self: Any, event: Any, msg_id: str) -> None:
            if event.type.rsplit(".", 1)[-1] in names:
                return
            await original(self, event, msg_id)

        worker_cls._job_event = _job_event

    return patch


def _no_keepalive(worker_cls: Any) -> None:
    getattr(worker_cls, "_keep_alive")  # noqa: B009 - fail loudly if it is gone

    async def _keep_alive(self: Any, msg: Any) -> None:
        return None

    worker_cls._keep_alive = _keep_alive


PATCHES: dict[str, Callable[[Any], None]] = {
    "none": lambda cls: None,
    "no-claimed": _skip_events({"claimed"}),
    "no-lifecycle": _skip_events({"claimed", "started"}),
    "no-keepalive": _no_keepalive,
}


USAGE = (
    f"usage: whatif_worker.py --variant {{{','.join(VARIANTS)}}} [--cpu-profile FILE] "
    "worker [FLAGS...]"
)


def main() -> None:
    argv = sys.argv[1:]
    if len(argv) < 2 or argv[0] != "--variant" or argv[1] not in PATCHES:
        sys.exit(USAGE)
    variant, argv = argv[1], argv[2:]
    profile_to = None
    if argv[:1] == ["--cpu-profile"]:
        if len(argv) < 2:
            sys.exit(USAGE)
        profile_to, argv = argv[1], argv[2:]
    from jetgrid.worker.agent import Worker

    PATCHES[variant](Worker)
    from jetgrid.cli import main as cli

    sys.argv = ["jetgrid", *argv]
    if profile_to is None:
        cli()
        return
    # CPU time, not wall time: waiting for the server and other processes' load do not count.
    prof = cProfile.Profile(time.process_time)
    prof.enable()
    try:
        cli()
    finally:
        prof.disable()
        prof.dump_stats(profile_to)


if __name__ == "__main__":
    main()
