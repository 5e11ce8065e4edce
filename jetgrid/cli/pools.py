"""`jetgrid pools`: per pool and model, the backlog, the oldest wait, warm and cold workers, and
the workers and jobs held back by their tier."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from jetgrid.cli.shared import json_option, nats_options, run_async, settings_from, setup_logging


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def _names(ids: list[str], limit: int = 3) -> str:
    shown = ",".join(ids[:limit])
    return f"{len(ids)}" + (f" ({shown}{',...' if len(ids) > limit else ''})" if ids else "")


def render(rows: list[Any]) -> str:
    """The table `jetgrid pools` prints."""
    header = (
        "POOL", "MODEL", "BACKLOG", "RUNNING", "OLDEST", "WARM", "COLD", "SUGGESTED", "UNSERVED",
        "HELD-BACK", "WAIT-ON-TIER",
    )  # fmt: skip
    body = [
        (
            r.pool,
            r.model,
            str(r.backlog),
            str(r.running),
            _age(r.oldest_wait_s),
            _names(r.warm_workers),
            _names(r.cold_workers),
            str(r.suggested_workers),
            str(r.unserved),
            _names(r.held_back_workers),
            str(r.held_back_jobs),
        )
        for r in rows
    ]
    if not body:
        return "no pool consumers and no online workers yet"
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    table = "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *body]
    )
    held = sum(r.held_back_jobs for r in rows)
    if held:
        table += (
            f"\n{held} job(s) wait on workers held back by their tier (factor 0); they take "
            "them after their fallback wait. GET /v1/workers says why each is held back."
        )
    return table


@click.command()
@nats_options
@json_option("Print JSON instead of a table.")
@run_async
async def pools(as_json: bool, **flags: Any) -> None:
    """Show each pool and model: jobs waiting (BACKLOG), delivered but unfinished (RUNNING),
    how long the oldest waiting job has waited, workers with the model loaded (WARM) or able
    to load it (COLD), and SUGGESTED, how many workers the model wants now (an autoscaling
    signal: ceil((backlog + running) / scale_jobs_per_worker), raised when jobs wait longer
    than the pool's cold_wait_s), UNSERVED, the waiting jobs no live worker serves (jobs
    queued with ?queue_unserved=true for a model no worker has taken yet included), HELD-BACK,
    the workers whose tier factor is 0, and WAIT-ON-TIER, the jobs that wait because every
    worker of the model is held back (they are taken after the tier's fallback wait,
    JETGRID_FALLBACK_WAIT_S). Read straight from JetStream; needs no gateway.
    """
    from jetgrid.coordinator.bus import Bus
    from jetgrid.projections.pools import read_pool_status

    settings = settings_from(**flags)
    setup_logging(settings)
    bus = await Bus.connect(settings, name="jetgrid-pools")
    try:
        rows = await read_pool_status(bus, settings, time.time())
    finally:
        await bus.close()
    if as_json:
        click.echo(json.dumps({"pools": [r.to_json() for r in rows]}, indent=2))
    else:
        click.echo(render(rows))
