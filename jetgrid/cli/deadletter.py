"""`jetgrid deadletter`: run a dead-letter watcher (max-deliveries advisories -> `dead` events)."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import click

from jetgrid.cli.shared import nats_options, run_async, settings_from, setup_logging


@click.command()
@nats_options
@run_async
async def deadletter(**flags: Any) -> None:
    """Mark jobs `dead` when JetStream gives up on them after MaxDeliver attempts.

    Reads the max-deliveries advisories of the job consumers (kept in the DEAD_LETTERS
    stream) and publishes one `dead` event per job. Any number may run at once: each job is
    marked dead exactly once. `jetgrid up` and every `jetgrid worker` already run one.
    """
    from jetgrid.worker.deadletter import watch_dead_letters

    settings = settings_from(**flags)
    setup_logging(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    click.echo(f"dead-letter watcher on {settings.nats_url}", err=True)
    await watch_dead_letters(settings, stop)
