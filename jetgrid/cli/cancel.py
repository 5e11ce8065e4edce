"""`jetgrid cancel ID`: ask for a job to be cancelled (it never starts, or its worker stops it)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from jetgrid.cli.shared import (
    nats_options,
    run_async,
    settings_from,
    setup_logging,
    wait_option,
)
from jetgrid.events import JobCancelRequested, check_id
from jetgrid.events.addressing import Speaker, event_name


@click.command()
@nats_options
@click.argument("job_id")
@click.option("--reason", default=None, help="Why; recorded in the cancel events.")
@wait_option("Wait up to this many seconds for the job's outcome and print it.")
@run_async
async def cancel(job_id: str, reason: str | None, wait: float | None, **flags: Any) -> None:
    """Cancel job JOB_ID: a queued job never starts, a running one is stopped.

    Publishes a cancel_requested event (idempotent: cancelling twice is one request). Workers
    skip the job if it has not started and stop it if it runs; either way its outcome is
    `cancelled`, unless it had already finished, in which case nothing changes.
    """
    from jetgrid.coordinator.bus import Bus

    check_id(job_id, "job id")  # else NATS refuses the subject with a less helpful message
    settings = settings_from(**flags)
    setup_logging(settings)
    request = JobCancelRequested(job_id=job_id, reason=reason, requested_by="cli")
    bus = await Bus.connect(settings, name="jetgrid-cancel")
    try:
        async with bus.follow_job(job_id) as follower:
            stored = await bus.store(request, Speaker.service("cli"))
            click.echo(json.dumps({"id": job_id, "cancel_requested": True, "seq": stored.seq}))
            if wait is None:
                return
            outcome = await follower.outcome(wait)
    finally:
        await bus.close()
    if outcome is None:
        raise click.ClickException(f"No outcome for job {job_id} within {wait} s.")
    name = event_name(outcome.event)
    reason = getattr(outcome.event, "reason", None)
    click.echo(json.dumps({"id": job_id, "status": name, "reason": reason}))
    sys.exit(0 if name == "cancelled" else 1)
