"""`jetgrid worker` with one experimental change patched in, for A/B runs of bench/roundtrip.py.

NOT production code. Each variant builds the worker with one part swapped through the Worker
constructor (`outcomes=`, `keep_alive=`; the CLI's worker command is pointed at that Worker in
this process only), to measure what a change in worker/ would buy before anyone makes it there.
Run it through the benchmark, which starts it in place of `jetgrid worker`:

    .venv/bin/python bench/roundtrip.py --worker-variant no-started

With ``--cpu-profile FILE`` (what ``roundtrip.py --profile DIR`` passes) the worker runs under
cProfile with a CPU-time clock, so time spent waiting, or descheduled by other processes on a
busy machine, is not counted.

Variants:
    none            nothing patched (checks that the wrapper itself costs nothing)
    no-started      `started` is not published: only the terminal event is stored. The upper
                    bound of deferring it until a job has run for a while (a short job then
                    stores just `completed`).
    no-keepalive    a per-job keepalive that sends no +WPI and returns at once (what one shared
                    ticker for all held jobs would save)
    uvloop          the worker's event loop is uvloop's (``pip install uvloop``)

A variant breaks loudly (TypeError at start) if Worker no longer takes the part it swaps.
"""

from __future__ import annotations

import cProfile
import functools
import sys
import time
from typing import Any

from nats.aio.msg import Msg

from jetgrid.events import JobStarted
from jetgrid.worker.outcomes import Outcomes

VARIANTS = ("none", "no-started", "no-keepalive", "uvloop")


class _NoStarted(Outcomes):
    """Publishes no `started` (and so has none to check before the ack)."""

    async def start(self, event: JobStarted) -> None:
        return None


async def _no_keepalive(msg: Msg, period_s: float) -> None:
    return None


PARTS: dict[str, dict[str, Any]] = {
    "none": {},
    "no-started": {"outcomes": _NoStarted},
    "no-keepalive": {"keep_alive": _no_keepalive},
    "uvloop": {},
}


def _use(parts: dict[str, Any]) -> None:
    """Make the CLI's worker command build its Worker with `parts` (it imports Worker late)."""
    if not parts:
        return
    from jetgrid.worker import agent

    # The CLI calls Worker(...) only, so a partial stands in for the class (bench only).
    agent.Worker = functools.partial(agent.Worker, **parts)  # type: ignore[assignment,misc]


USAGE = (
    f"usage: whatif_worker.py --variant {{{','.join(VARIANTS)}}} [--cpu-profile FILE] "
    "worker [FLAGS...]"
)


def main() -> None:
    argv = sys.argv[1:]
    if len(argv) < 2 or argv[0] != "--variant" or argv[1] not in PARTS:
        sys.exit(USAGE)
    variant, argv = argv[1], argv[2:]
    profile_to = None
    if argv[:1] == ["--cpu-profile"]:
        if len(argv) < 2:
            sys.exit(USAGE)
        profile_to, argv = argv[1], argv[2:]
    _use(PARTS[variant])
    if variant == "uvloop":
        import asyncio

        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
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
