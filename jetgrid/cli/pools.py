"""`jetgrid pools`: per pool and model, the backlog, the oldest wait, warm and cold workers, and
the workers and jobs held back by their tier; with ``--queue URL``, the live queue per pool,
model and tenant as that gateway's ``GET /v1/queue`` computes it (projections.queue)."""

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


def _fig(v: float | None) -> str:
    return "-" if v is None else _age(v)


def render_queue(body: dict[str, Any]) -> str:
    """The queue table `jetgrid pools --queue` prints (a GET /v1/queue body)."""
    header = (
        "POOL", "MODEL", "TENANT", "QUEUED", "RUNNING", "OLDEST", "WAIT-P50", "WAIT-P95", "DRAIN/S",
        "SHARE",
    )  # fmt: skip
    body_rows: list[tuple[str, ...]] = []
    for q in body.get("queues", []):
        for t in [{**q, "tenant": "(all)"}, *q.get("tenants", [])]:
            share = t.get("share")
            body_rows.append(
                (
                    q["pool"],
                    q["model"],
                    t["tenant"],
                    str(t["queued"]),
                    str(t["running"]),
                    _fig(t["oldest_wait_s"]),
                    _fig(t["wait_p50_s"]),
                    _fig(t["wait_p95_s"]),
                    f"{t['drain_per_s']:.2f}",
                    "-" if share is None else f"{100 * share:.1f}%",
                )
            )
    if not body_rows:
        return "queue: nothing queued or running, and no job started in the window"
    widths = [max(len(row[i]) for row in [header, *body_rows]) for i in range(len(header))]
    table = "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *body_rows]
    )
    return table + f"\n(waits and drain over the last {body.get('window_s', 0):g} s)"


async def read_queue(url: str, api_key: str | None) -> dict[str, Any]:
    """GET <url>/v1/queue, or a ClickException naming the gateway and what went wrong."""
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    target = url.rstrip("/") + "/v1/queue"
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            r = await http.get(target, headers=headers)
    except httpx.HTTPError as exc:
        raise click.ClickException(
            f"Could not read {target}: {exc or type(exc).__name__}; check --queue."
        ) from None
    if r.status_code != 200:
        raise click.ClickException(
            f"{target} answered {r.status_code}; give a gateway URL (and --api-key if it has keys)."
        )
    data: dict[str, Any] = r.json()
    return data


@click.command()
@nats_options
@json_option("Print JSON instead of a table.")
@click.option(
    "--queue",
    "queue_url",
    metavar="URL",
    default=None,
    help="Also print the live queue per pool, model and tenant (queued, running, oldest wait, "
    "p50/p95 wait, drain rate, share of running jobs) from the gateway at URL (GET /v1/queue).",
)
@click.option(
    "--api-key",
    envvar="JETGRID_API_KEY",
    default=None,
    help="API key for --queue's gateway. [env JETGRID_API_KEY]",
)
@run_async
async def pools(as_json: bool, queue_url: str | None, api_key: str | None, **flags: Any) -> None:
    """Show each pool and model: jobs waiting (BACKLOG), delivered but unfinished (RUNNING),
    how long the oldest waiting job has waited, workers with the model loaded (WARM) or able
    to load it (COLD), and SUGGESTED, how many workers the model wants now (an autoscaling
    signal: ceil((backlog + running) / scale_jobs_per_worker), raised when jobs wait longer
    than the pool's cold_wait_s), UNSERVED, the waiting jobs no live worker serves (jobs
    queued with ?queue_unserved=true for a model no worker has taken yet included), HELD-BACK,
    the workers whose tier factor is 0, and WAIT-ON-TIER, the jobs that wait because every
    worker of the model is held back (they are taken after the tier's fallback wait,
    JETGRID_FALLBACK_WAIT_S). Read straight from JetStream; needs no gateway.

    With --queue URL it also prints, per pool, model and tenant, the live queue that gateway
    follows (as GET /v1/queue and the dashboard show it): QUEUED, RUNNING, OLDEST wait,
    WAIT-P50 / WAIT-P95 (submit to start of the jobs started in the window), DRAIN/S (starts
    per second) and SHARE (the tenant's fraction of the running jobs).
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
    queue = await read_queue(queue_url, api_key) if queue_url else None
    if as_json:
        out: dict[str, Any] = {"pools": [r.to_json() for r in rows]}
        if queue is not None:
            out["queue"] = queue
        click.echo(json.dumps(out, indent=2))
    else:
        click.echo(render(rows))
        if queue is not None:
            click.echo("\n" + render_queue(queue))
