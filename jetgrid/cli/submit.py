"""`jetgrid submit`: put one job straight on NATS, and with --wait print its outcome."""

from __future__ import annotations

import json
import sys
import uuid
from typing import Any

import click
from pydantic import ValidationError

from jetgrid.cli.shared import (
    model_option,
    nats_options,
    pool_option,
    priority_option,
    run_async,
    settings_from,
    setup_logging,
    wait_option,
)
from jetgrid.events import JobSubmitted, Priority
from jetgrid.events.addressing import Speaker, event_name

# The flag that sets each field of the job, to name it when the job refuses a value.
FLAG_OF = {
    "job_id": "--id",
    "input": "--input",
    "timeout_s": "--timeout",
    "prompt": "--prompt",
    "start_by": "--start-by",
    "ttl_s": "--ttl",
}


@click.command()
@nats_options
@model_option("Model to run.")
@click.option("--prompt", help="Text input.")
@click.option("--input", "input_json", help="Structured input as a JSON object.")
@pool_option("Pool; it must serve the model. [default: routed by the model's pool patterns]")
@click.option(
    "--id", "job_id", default=None, help="Job id (also the dedupe key). [default: random]"
)
@wait_option("Wait up to this many seconds for the result.")
@priority_option("Within its pool, higher-priority jobs start first when the pool is backlogged.")
@click.option(
    "--timeout",
    "timeout_s",
    type=float,
    default=None,
    help="Seconds the job may run (capped by the pool).",
)
@click.option(
    "--start-by",
    default=None,
    help="RFC 3339 time (with an offset): if no worker starts the job by then, it ends expired.",
)
@click.option(
    "--ttl",
    "ttl_s",
    type=float,
    default=None,
    help="Seconds after submission the job may still start; then it ends expired.",
)
@run_async
async def submit(
    model: str,
    prompt: str | None,
    input_json: str | None,
    pool: str | None,
    job_id: str | None,
    wait: float | None,
    priority: Priority,
    timeout_s: float | None,
    start_by: str | None,
    ttl_s: float | None,
    **flags: Any,
) -> None:
    """Submit a job straight to NATS and print its id (and, with --wait, its outcome as JSON).

    The job's submitter (its tenant) is the NATS user it connects as (`cli` without one); in a
    fair-share pool it goes to that tenant's queue, the only one a `client` user may publish to.
    """
    from jetgrid.coordinator.bus import Bus

    settings = settings_from(**flags)
    setup_logging(settings)
    try:
        data = json.loads(input_json) if input_json else None
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--input") from exc
    if data is not None and not isinstance(data, dict):
        raise click.BadParameter(
            f'{input_json} is not a JSON object; give one, e.g. \'{{"text": "hi"}}\'.',
            param_hint="--input",
        )
    if prompt is None and data is None:
        raise click.UsageError("Give --prompt or --input.")
    from jetgrid.coordinator.routing import RouteError, route_job
    from jetgrid.coordinator.share import queue_tenant
    from jetgrid.events import InvalidEvent, check_chosen_id

    try:
        pools = settings.pool_configs()
        pool = route_job(pools, model=model, pool=pool)
    except RouteError as exc:
        raise click.BadParameter(str(exc), param_hint=f"--{exc.field}") from exc
    submitter = settings.nats_user or "cli"
    deadline: dict[str, Any] = {"start_by": start_by, "ttl_s": ttl_s}  # validated as the job is
    try:
        job = JobSubmitted(
            job_id=job_id or uuid.uuid4().hex,
            model=model,
            pool=pool,
            prompt=prompt,
            input=data,
            submitter=submitter,
            tenant=queue_tenant(pools[pool], submitter),
            priority=priority,
            timeout_s=timeout_s,
            **deadline,
        )
    except ValidationError as exc:
        raise refused(exc) from None
    try:
        check_chosen_id(job.job_id)  # the worker would reject it: say so now
    except InvalidEvent as exc:
        raise click.BadParameter(exc.reason, param_hint="--id") from None
    bus = await Bus.connect(settings, name="jetgrid-submit")
    try:
        async with bus.follow_job(job.job_id) as follower:
            stored = await bus.store(job, Speaker.service("cli"))
            click.echo(json.dumps({"id": job.job_id, "seq": stored.seq, "status": "queued"}))
            if wait is None:
                return
            outcome = await follower.outcome(wait)
    finally:
        await bus.close()
    if outcome is None:
        raise click.ClickException(f"No outcome for job {job.job_id} within {wait} s.")
    fields = outcome.event.model_dump(mode="json", exclude={"type", "version", "job_id"})
    name = event_name(outcome.event)
    click.echo(json.dumps({"id": job.job_id, "status": name, **fields}))
    if name != "completed":
        sys.exit(1)


def refused(exc: ValidationError) -> click.BadParameter:
    """The first value the job refused, named by its flag, with the rule it broke."""
    err = exc.errors(include_url=False)[0]
    field = str(err["loc"][0]) if err["loc"] else ""
    rule = err["msg"].removeprefix("Value error, ").rstrip(".")
    shown = repr(err["input"])
    return click.BadParameter(
        f"{rule}." if shown in rule else f"{rule}, got {shown}.",
        param_hint=FLAG_OF.get(field, field or None),
    )
