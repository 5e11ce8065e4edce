"""`jetgrid projector`: run the projector alone (read models + tiers KV)."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import click

from jetgrid.cli.shared import (
    nats_options,
    read_model_options,
    run_async,
    settings_from,
    settle_heap,
    setup_logging,
)


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
    Ctrl-C or SIGTERM stops it cleanly. It publishes snapshots of its read models
    (JETGRID_SNAPSHOT_EVERY messages, JETGRID_SNAPSHOT_EVERY_S of stream time); started on an
    empty database it begins from the newest snapshot instead of sequence 1.
    """
    from jetgrid.projections.runner import open_projector

    settings = settings_from(**flags)
    setup_logging(settings)
    proj = await open_projector(settings, batch_max=batch_max)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if proj.stats.restored is not None:
        click.echo(f"projector started from the snapshot at {proj.stats.restored}", err=True)
    click.echo(
        f"projector following {settings.nats_url} into {settings.database_url} "
        f"(positions {proj.stats.positions})",
        err=True,
    )
    settle_heap()
    try:
        await stop.wait()
    finally:
        await proj.close()
        click.echo(repr(proj), err=True)
