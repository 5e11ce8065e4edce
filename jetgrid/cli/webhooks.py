"""`jetgrid webhooks`: run a webhook service (job and batch outcomes POSTed, signed, retried)."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import click

from jetgrid.cli.shared import (
    nats_options,
    run_async,
    settings_from,
    settle_heap,
    setup_logging,
)


@click.command()
@nats_options
@run_async
async def webhooks(**flags: Any) -> None:
    """Deliver the outcomes of jobs and batches that name a webhook URL.

    Binds the shared durable consumer on the terminal job events, POSTs each outcome with the
    Standard Webhooks headers (webhook-id, webhook-timestamp, webhook-signature), retries with
    back-off, and records deliveries that give up on <prefix>.invalid.WEBHOOKS. Any number may
    run at once; `jetgrid up` already runs one. Private and loopback targets are refused
    unless JETGRID_WEBHOOK_ALLOW_PRIVATE=1; without API keys, JETGRID_WEBHOOK_SECRET signs.
    """
    from jetgrid.coordinator.aio import ready_or_raise
    from jetgrid.webhooks import serve_webhooks

    settings = settings_from(**flags)
    setup_logging(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    click.echo(f"webhook service on {settings.nats_url}", err=True)
    ready = asyncio.Event()
    serving = asyncio.create_task(serve_webhooks(settings, stop, ready), name="webhooks")
    await ready_or_raise(ready, serving)
    settle_heap()
    await serving
