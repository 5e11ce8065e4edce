"""`jetgrid provision`: create or update the streams and the tiers bucket, idempotently."""

from __future__ import annotations

from typing import Any

import click

from jetgrid.cli.shared import nats_options, run_async, settings_from, setup_logging


@click.command()
@nats_options
@click.option(
    "--update/--no-update",
    default=True,
    show_default=True,
    help="Update streams whose config drifted (else fail and show the drift).",
)
@run_async
async def provision(update: bool, **flags: Any) -> None:
    """Create or update jetgrid's streams (JOBS, JOB_EVENTS, WORKERS, INVALID, DEAD_LETTERS)
    and the tiers KV bucket. Idempotent."""
    from jetgrid.coordinator.bus import Bus
    from jetgrid.coordinator.provision import provision_deployment

    settings = settings_from(**flags)
    setup_logging(settings)
    bus = await Bus.connect(settings, name="jetgrid-provision")
    try:
        report = await bus.call(
            provision_deployment(bus.js, settings, update=update),
            "provision streams (connect as the admin user)",
        )
    finally:
        await bus.close()
    for line in report.lines():
        click.echo(line)
