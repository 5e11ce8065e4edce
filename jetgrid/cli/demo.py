"""`jetgrid demo`: four simulated workers at 99.5/98/92/85% uptime, live, then a summary.

Where it runs:

- **NATS.** The one in the settings (``--nats-url``, default the `jetgrid up` address). If none
  answers there and no URL was given explicitly, the demo starts its own nats-server in a
  temporary directory, and removes it at the end. Streams and the tiers bucket are provisioned
  idempotently either way.
- **Projector.** The demo waits a few seconds for a running projector (the one in `jetgrid up`)
  to publish its workers' tiers. If none does, it runs its own, with a throw-away SQLite store
  and a one-minute uptime window. Either works: the demo's workers are new (fresh ids each run),
  so they are judged over the slots since their first ping, and with pings every 0.1 s the
  100-slot probation ends after 10 s, when 99.5% and 98% already read as different tiers.
- **Jobs.** Model ``demo`` in pool ``standard`` (a consumer of its own, so `jetgrid up`'s echo
  workers do not take them). The stream keeps ``--backlog`` jobs waiting, so the queue is
  saturated without piling up; a few fail for good and a few fail transiently (retried later).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console, Group, JustifyMethod
from rich.live import Live
from rich.table import Table
from rich.text import Text

from jetgrid.cli.shared import (
    nats_options,
    nats_url_given,
    run_async,
    settings_from,
    setup_logging,
)

PROJECTOR_GRACE_S = 4.0


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.0f}"


def _pct(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v * 100:.{digits}f}%"


def worker_table(fleet: Any, title: str) -> Table:
    """The per-worker statistics as a rich table."""
    t = Table(title=title, title_justify="left", expand=False)
    columns: list[tuple[str, JustifyMethod]] = [
        ("worker", "left"), ("simulated", "right"), ("tier", "left"), ("factor", "right"),
        ("pings ok", "right"), ("rate/s", "right"), ("budget/s", "right"), ("sent", "right"),
        ("succeeded", "right"), ("failed", "right"), ("delayed", "right"),
        ("latency ms min/avg/max", "right"),
    ]  # fmt: skip
    for name, justify in columns:
        t.add_column(name, justify=justify)
    colours = {"full": "green", "half": "yellow", "tenth": "magenta", "none": "red"}
    for r in fleet.rows():
        lo, avg, hi = r["latency"]
        tier = str(r["tier"])
        t.add_row(
            str(r["worker"]),
            _pct(r["simulated"]),
            Text(tier, style=colours.get(tier, "cyan")),
            f"{r['factor']:g}",
            _pct(r["uptime"]),
            f"{r['rate']:.1f}",
            "-" if r["budget"] is None else f"{r['budget']:g}",
            str(r["sent"]),
            str(r["succeeded"]),
            str(r["failed"]),
            str(r["delayed"]),
            f"{_ms(lo)} / {_ms(avg)} / {_ms(hi)}",
        )
    return t


def status_line(fleet: Any) -> str:
    counts = ", ".join(f"{k} {v}" for k, v in sorted(fleet.status.items()) if v)
    return f"jobs submitted {fleet.submitted} (waiting in the queue: {fleet.backlog}): {counts}"


def share_table(fleet: Any) -> Table:
    t = Table(
        title="Share of the jobs completed since every worker left probation",
        title_justify="left",
    )
    for name in ("worker", "tier factor", "expected share", "actual share", "jobs"):
        t.add_column(name, justify="left" if name == "worker" else "right")
    rows = {str(r["worker"]): r for r in fleet.rows()}
    for worker, factor, expected, actual in fleet.shares():
        t.add_row(
            worker,
            f"{factor:g}",
            _pct(expected),
            _pct(actual),
            str(rows[worker]["settled_succeeded"]),
        )
    return t


def render(fleet: Any, elapsed: float, duration: float, where: str) -> Group:
    settled = (
        f"tiers settled after {fleet.settled_at - fleet.started_at:.0f} s"
        if fleet.settled_at is not None
        else "all workers start in probation (factor 0.5) until 100 ping slots are observed"
    )
    return Group(
        worker_table(fleet, f"jetgrid demo: {elapsed:.0f}/{duration:.0f} s, {where}"),
        Text(status_line(fleet)),
        Text(settled, style="dim"),
    )


async def _projector_running(fleet: Any, js: Any, bucket: str, within: float) -> bool:
    """Whether some projector publishes the fleet's tiers (it puts a key on first sight)."""
    kv = await js.key_value(bucket)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for w in fleet.workers:
            with contextlib.suppress(Exception):
                if await kv.get(w.id):
                    return True
        await asyncio.sleep(0.25)
    return False


@click.command()
@nats_options
@click.option(
    "--duration", type=float, default=60.0, show_default=True, help="Seconds the demo runs."
)
@click.option(
    "--ping-interval",
    type=float,
    default=0.1,
    show_default=True,
    help="Seconds between the simulated workers' pings.",
)
@click.option(
    "--rate",
    type=float,
    default=10.0,
    show_default=True,
    help="Base pull rate of each worker in jobs/s, before its tier factor.",
)
@click.option(
    "--backlog",
    type=int,
    default=40,
    show_default=True,
    help="Jobs kept waiting in the queue (a saturated queue that stays small).",
)
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of the simulation.")
@run_async
async def demo(
    duration: float, ping_interval: float, rate: float, backlog: int, seed: int, **flags: Any
) -> None:
    """Watch uptime tiers decide who gets work: the suggested first thing after `jetgrid up`.

    Runs four simulated workers at 99.5%, 98%, 92% and 85% uptime (they miss or fail pings on
    a reproducible schedule), a projector if none is running, and a steady stream of jobs, and
    shows per-worker statistics live: tier, uptime, rate, jobs sent, succeeded, failed,
    delayed, latency. After about 10 s the workers leave probation and their shares of the
    work follow their tiers (1 : 0.5 : 0.1 : 0). Ends by itself after --duration with a
    summary. Without a reachable NATS (and no --nats-url), it starts a private one.
    """
    from jetgrid import credentials
    from jetgrid.coordinator.bus import Bus
    from jetgrid.coordinator.errors import NatsUnavailable
    from jetgrid.coordinator.provision import ensure_tiers_bucket, provision_streams
    from jetgrid.demo import Fleet, FleetOptions
    from jetgrid.events import stream_specs
    from jetgrid.natsserver import NatsServer
    from jetgrid.projections.fold import fold_config
    from jetgrid.projections.runner import open_projector

    explicit_url = nats_url_given(flags)
    settings = settings_from(**flags, heartbeat_interval_s=ping_interval)
    settings = settings.replace(nats_connect_timeout_s=2.0)
    setup_logging(settings)
    console = Console()
    creds = credentials.load(settings.data_dir, os.environ)
    if creds is not None and settings.nats_user != "admin":
        # The demo plays four workers (their pings and results) and may run a projector: on a
        # deployment with a user per role (`jetgrid up`) only the admin user may do all that.
        settings = creds.settings_for(settings, "admin")
        console.print(f"Using the admin NATS user from {creds.path}.")
    tmp = Path(tempfile.mkdtemp(prefix="jetgrid-demo-"))
    server: NatsServer | None = None
    projector = None
    fleet: Fleet | None = None
    try:
        try:
            bus = await Bus.connect(settings, name="jetgrid-demo-setup")
            where = f"NATS {settings.nats_url}"
        except NatsUnavailable:
            if explicit_url:
                raise
            server = NatsServer(tmp / "nats", log_file=tmp / "nats-server.log")
            await asyncio.to_thread(server.start)
            settings = settings.replace(nats_url=server.url)
            where = f"private NATS {server.url}"
            console.print(
                f"No NATS at the default address; started a private one at {server.url} "
                "(removed at the end). Run `jetgrid up` first to watch it there instead."
            )
            bus = await Bus.connect(settings, name="jetgrid-demo-setup")
        js = bus.js
        try:
            specs = stream_specs(settings.subjects, settings.streams)
            await provision_streams(js, specs)
            await ensure_tiers_bucket(js, settings.tiers_bucket)
            fleet = Fleet(
                settings,
                FleetOptions(pull_rate=rate, backlog=backlog, seed=seed),
            )
            await fleet.start()
            if await _projector_running(fleet, js, settings.tiers_bucket, PROJECTOR_GRACE_S):
                where += ", the running projector"
            else:
                own = settings.replace(
                    db_url=f"sqlite+aiosqlite:///{tmp / 'demo.db'}", uptime_windows="1m"
                )
                projector = await open_projector(own, fold_config(own, tick_s=0.5))
                where += ", the demo's own projector"
        finally:
            await bus.close()

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        t0 = fleet.started_at  # the clock runs from the workers' start, grace included
        with Live(render(fleet, 0, duration, where), console=console, refresh_per_second=4) as live:
            while not stop.is_set():
                elapsed = time.monotonic() - t0
                if elapsed >= duration:
                    break
                live.update(render(fleet, elapsed, duration, where))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=min(0.5, duration - elapsed))
            live.update(render(fleet, time.monotonic() - t0, duration, where))
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        console.print("\nstopping the workers...")
        await fleet.stop()
        summary(console, fleet, time.monotonic() - t0)
        fleet = None
    finally:
        if fleet is not None:
            await fleet.stop()
        if projector is not None:
            await projector.close()
        if server is not None:
            await asyncio.to_thread(server.stop)
        shutil.rmtree(tmp, ignore_errors=True)


def summary(console: Console, fleet: Any, elapsed: float) -> None:
    """The final report: per-worker statistics and the shares, expected vs actual."""
    console.print()
    console.print(worker_table(fleet, f"Summary after {elapsed:.0f} s"))
    console.print(status_line(fleet))
    if fleet.settled_at is None:
        console.print(
            "The workers were still in probation when the demo ended; run it longer "
            "(--duration 60) to see the tiers split the work."
        )
        return
    console.print(share_table(fleet))
    console.print(
        "Expected share = tier factor / sum of factors: with a saturated queue each worker takes "
        "its base rate times its factor. The 85% worker pings on but takes nothing."
    )
