"""`jetgrid projector`: run the projector alone (read models + tiers KV)."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import click

from jetgrid.cli import _logging, _settings, nats_options, run_async


def db_option(f: Any) -> Any:
    return click.option(
        "--db-url",
        help="SQLAlchemy async URL of the read-model database, e.g. "
        "postgresql+asyncpg://u:p@host/jetgrid. [env JETGRID_DB_URL; default "
        "sqlite+aiosqlite:///<data-dir>/jetgrid.db]",
    )(f)


def read_model_options(f: Any) -> Any:
    """Flags for what the read models depend on (tier policy, uptime windows, data dir)."""
    options = [
        click.option("--data-dir", type=click.Path(file_okay=False), help="Where the default SQLite database lives. [env JETGRID_DATA_DIR; default ./.jetgrid]"),
        click.option("--tier-policy", help="Tiers as min_uptime:factor pairs, e.g. 0.99:1.0,0.95:0.5,0.90:0.1,0:0. [env JETGRID_TIER_POLICY]"),
        click.option("--tier-policy-file", type=click.Path(dir_okay=False), help="Tier policy as a TOML file. [env JETGRID_TIER_POLICY_FILE]"),
        click.option("--uptime-windows", help="Uptime windows, e.g. 1h,24h. [env JETGRID_UPTIME_WINDOWS; default 1h,24h]"),
        click.option("--tier-window", help="The window tiers are judged over (one of --uptime-windows). [default: the first]"),
    ]  # fmt: skip
    for opt in reversed(options):
        f = opt(f)
    return db_option(f)


@click.command()
@nats_options
@read_model_options
@click.option(
    "--batch-max",
    type=int,
    default=2000,
    show_default=True,
    help="Most messages folded and committed in one transaction.",
)
@run_async
async def projector(batch_max: int, **flags: Any) -> None:
    """Follow WORKERS, JOBS and JOB_EVENTS into the read-model database and publish tiers.

    Resumes from the checkpoints stored with the read models (each batch and its checkpoint
    commit in one transaction, so a kill at any point loses nothing and repeats nothing), and
    puts each worker's tier into the tiers KV bucket whenever it changes. Run one per database;
    Ctrl-C or SIGTERM stops it cleanly.
    """
    from jetgrid.projections.runner import open_projector

    settings = _settings(**flags)
    _logging(settings)
    proj = await open_projector(settings, batch_max=batch_max)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    click.echo(
        f"projector following {settings.nats_url} into {settings.database_url} "
        f"(positions {proj.stats.positions})",
        err=True,
    )
    try:
        await stop.wait()
    finally:
        await proj.close()
        click.echo(repr(proj), err=True)
