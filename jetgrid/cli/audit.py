"""`jetgrid audit`: replay the log and report, per worker, tiers, claims and budget violations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from jetgrid.cli.shared import (
    archive_option,
    json_option,
    nats_options,
    read_model_options,
    run_async,
    settings_from,
    setup_logging,
)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.2f}%"


def _s(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}s"


def render(report: dict[str, Any]) -> str:
    """The report as plain text, one block per worker."""
    lines = [
        f"audit of {report['stream_prefix'] or ''}WORKERS/JOBS/JOB_EVENTS from {report['from'] or 'the start'} to {report['to'] or 'the end'}",
        f"budget: base rate {report['rule']['rate'] or 'unlimited'} jobs/s, burst {report['rule']['capacity']}, grace {report['rule']['grace_s']} s",
    ]
    if report.get("skipped_invalid"):
        lines.append(f"skipped {report['skipped_invalid']} messages that are not valid events")
    for w in report["workers"]:
        up = ", ".join(f"{k} {_pct(v)}" for k, v in w["uptime"].items())
        lines.append("")
        lines.append(
            f"{w['worker_id']}: uptime {up}; claims {w['claims']}; over budget {w['over_budget']}; "
            f"taken for want of better {w.get('taken_for_want_of_better', 0)}"
        )
        timeline = " -> ".join(f"{e['tier']}@{e['since']}" for e in w["tier_timeline"]) or "-"
        lines.append(f"  tiers     {timeline}")
        if w.get("from_rollups_until"):
            lines.append(f"  rollups   tiers to {w['from_rollups_until']} are from hour rollups")
        lines.append(
            f"  per tier  {', '.join(f'{k} {v}' for k, v in w['claims_per_tier'].items()) or '-'}"
        )
        lines.append(
            f"  outcomes  {', '.join(f'{k} {v}' for k, v in w['outcomes'].items()) or '-'}"
        )
        lat = w["latency_s"]
        lines.append(
            f"  latency   n {lat['n']} min {_s(lat['min'])} avg {_s(lat['avg'])} p50 {_s(lat['p50'])} p99 {_s(lat['p99'])} max {_s(lat['max'])}"
        )
        for v in w["violations"][:20]:
            lines.append(f"  OVER      {v['time']} job {v['job_id']} in {v['tier']}: {v['reason']}")
        if len(w["violations"]) > 20:
            lines.append(f"  ... and {len(w['violations']) - 20} more (use --json)")
    total = sum(w["over_budget"] for w in report["workers"])
    lines.append("")
    lines.append(f"{total} claim(s) above budget" if total else "no claims above budget")
    spare = sum(w.get("taken_for_want_of_better", 0) for w in report["workers"])
    if spare:
        lines.append(f"{spare} claim(s) taken for want of better (no one else took them in time)")
    return "\n".join(lines)


@click.command()
@nats_options
@read_model_options
@click.option(
    "--from",
    "from_",
    default=None,
    help="Only claims, outcomes and tier changes at or after this RFC 3339 time.",
)
@click.option(
    "--to",
    "to",
    default=None,
    help="Read the log up to this RFC 3339 time (stream timestamps) and judge uptime there.",
)
@json_option("Print the report as JSON.")
@click.option(
    "--rate",
    type=float,
    default=None,
    help="Base pull rate (jobs/s) to check claims against; 0 = unlimited (then only claims in a zero-factor tier count). [env JETGRID_PULL_RATE]",
)
@click.option(
    "--burst",
    type=float,
    default=None,
    help="Pull burst (tokens). [env JETGRID_PULL_BURST; 0 = max(1, rate)]",
)
@click.option(
    "--grace",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds a tier drop may take to reach a worker before claims count against the lower tier.",
)
@click.option("--worker", "only", multiple=True, help="Only these worker ids (repeatable).")
@click.option(
    "--fail-on-violation", is_flag=True, help="Exit with status 2 if any claim is above budget."
)
@archive_option
@run_async
async def audit(
    from_: str | None,
    to: str | None,
    as_json: bool,
    rate: float | None,
    burst: float | None,
    grace: float,
    only: tuple[str, ...],
    fail_on_violation: bool,
    archive_dir: Path | None,
    **flags: Any,
) -> None:
    """Replay the log and report per worker: uptime per window, tier timeline, jobs taken in
    each tier, jobs taken above the tier's budget, outcomes and latency.

    Nothing trusts the tiers a worker says it obeys: the audit folds WORKERS exactly as the
    projector does, reads every claim from JOB_EVENTS and replays each worker's token bucket
    (base rate x tier factor) over event time. A claim is above budget when the worker's tier had
    factor 0 for longer than --grace, or (with a base rate) when the bucket had no token.
    """
    from jetgrid.coordinator.bus import Bus
    from jetgrid.events import parse_time
    from jetgrid.events.errors import InvalidEvent
    from jetgrid.projections.archive import ArchiveDir
    from jetgrid.projections.audit import BudgetRule, report_worker
    from jetgrid.projections.audit_log import gather
    from jetgrid.projections.fold import fold_config

    try:
        start = parse_time(from_, "--from") if from_ else None
        end = parse_time(to, "--to") if to else None
    except InvalidEvent as exc:
        raise click.BadParameter(str(exc)) from None
    settings = settings_from(**flags)
    setup_logging(settings)
    config = fold_config(settings)
    rule = BudgetRule(
        rate=settings.pull_rate if rate is None else rate,
        burst=settings.pull_burst if burst is None else burst,
        grace_s=grace,
        default_factor=config.policy.probation_factor,
    )
    archive = ArchiveDir(archive_dir, settings) if archive_dir else None
    bus = await Bus.connect(settings, name="jetgrid-audit")
    try:
        log = await gather(settings, bus, config, until=end, archive=archive)
    finally:
        await bus.close()
    workers = [
        report_worker(
            w, rule, start.timestamp() if start else None, end.timestamp() if end else None
        )
        for w in log.workers(end)
        if not only or w.worker_id in only
    ]
    report = {
        "stream_prefix": settings.stream_prefix,
        "from": from_,
        "to": to,
        "rule": {"rate": rule.rate, "capacity": rule.capacity, "grace_s": rule.grace_s},
        "positions": log.fold.positions,
        "skipped_invalid": log.fold.counts["invalid"],
        "workers": workers,
    }
    click.echo(json.dumps(report, indent=2) if as_json else render(report))
    if fail_on_violation and any(w["over_budget"] for w in workers):
        raise SystemExit(2)
