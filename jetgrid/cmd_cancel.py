"""`jetgrid cancel ID`: ask for a job to be cancelled (it never starts, or its worker stops it)."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import click

from jetgrid.cli import _settings as settings_of
from jetgrid.cli import nats_options, run_async
from jetgrid.coordinator.delivery import cancel_request
from jetgrid.events import TERMINAL_NAMES, decode


@click.command()
@nats_options
@click.argument("job_id")
@click.option("--reason", default=None, help="Why; recorded in the cancel events.")
@click.option(
    "--wait",
    type=float,
    default=None,
    help="Wait up to this many seconds for the job's outcome and print it.",
)
@run_async
async def cancel(job_id: str, reason: str | None, wait: float | None, **flags: Any) -> None:
    """Cancel job JOB_ID: a queued job never starts, a running one is stopped.

    Publishes a cancel_requested event (idempotent: cancelling twice is one request). Workers
    skip the job if it has not started and stop it if it runs; either way its outcome is
    `cancelled`, unless it had already finished, in which case nothing changes.
    """
    from jetgrid.cli import _logging
    from jetgrid.coordinator.connect import connect

    settings = settings_of(**flags)
    _logging(settings)
    subject, body, msg_id = cancel_request(settings.subjects, job_id, reason, "cli")
    nc = await connect(settings, name="jetgrid-cancel")
    try:
        sub = await nc.subscribe(settings.subjects.job_events(job_id)) if wait else None
        ack = await nc.jetstream().publish(subject, body, headers={"Nats-Msg-Id": msg_id})
        click.echo(json.dumps({"id": job_id, "cancel_requested": True, "seq": ack.seq}))
        if sub is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait  # type: ignore[operator]
        while (left := deadline - loop.time()) > 0:
            try:
                msg = await sub.next_msg(timeout=left)
            except Exception:
                continue
            _, name = settings.subjects.parse_job_event(msg.subject)
            if name in TERMINAL_NAMES:
                ev = decode(msg.data).event
                click.echo(json.dumps({"id": job_id, "status": name,
                                       "reason": getattr(ev, "reason", None)}))  # fmt: skip
                sys.exit(0 if name == "cancelled" else 1)
        raise click.ClickException(f"No outcome for job {job_id} within {wait} s.")
    finally:
        await nc.close()
