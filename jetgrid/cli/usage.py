"""`jetgrid usage`: GPU-seconds, energy and tokens per key, model or worker over a period."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from jetgrid.cli.shared import json_option, nats_options, run_async, settings_from, setup_logging


def _time(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an RFC 3339 time such as 2026-12-05T12:00:00Z", param_hint=name
        ) from None
    if t.tzinfo is None:
        raise click.BadParameter(
            f"{value!r} has no timezone; add one, e.g. {value}Z", param_hint=name
        )
    return t


@click.command()
@nats_options
@click.option("--from", "start", required=True, help="Start of the period (RFC 3339 time, with a timezone).")  # fmt: skip
@click.option("--to", "end", default=None, help="End of the period, exclusive (RFC 3339). [default: now]")  # fmt: skip
@click.option("--by", type=click.Choice(["key", "model", "worker"]), default="key", show_default=True, help="Sum per API key (the submitter), model or worker.")  # fmt: skip
@click.option("--prices", "prices_file", type=click.Path(path_type=Path), default=None, help="A prices file (TOML: per_gpu_second, per_kj, per_1k_tokens, [model.\"NAME\"] overrides) to price the period with.")  # fmt: skip
@json_option("Print the rows as JSON.")
@run_async
async def usage(
    start: str,
    end: str | None,
    by: str,
    prices_file: Path | None,
    as_json: bool,
    **flags: Any,
) -> None:
    """Report the GPU-seconds, energy and tokens of the runs that ended in a period.

    Reads JOB_EVENTS and WORKERS from just before --from to --to (a run counts in the period it
    ends in) and each counted job's submission from JOBS. A run holds its worker's GPUs divided
    by its concurrency; energy is the worker's pinged GPU power shared among its running jobs.
    --prices applies a price table to any past period: the log keeps usage, never prices.
    """
    from jetgrid.coordinator.bus import Bus
    from jetgrid.events import ConfigError, now
    from jetgrid.projections.prices import load_prices, report
    from jetgrid.projections.usage import totals
    from jetgrid.projections.usage_read import read_usage

    t0 = _time(start, "--from")
    t1 = _time(end, "--to") or now()
    assert t0 is not None
    if t1 <= t0:
        raise click.BadParameter(f"{end!r} is not after --from {start!r}", param_hint="--to")
    try:
        prices = load_prices(prices_file) if prices_file else None
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--prices") from None
    settings = settings_from(**flags)
    setup_logging(settings)
    bus = await Bus.connect(settings, name="jetgrid-usage")
    try:
        runs = await read_usage(bus, settings, t0, t1)
    finally:
        await bus.close()
    rows = report(totals(runs, by), by, prices)  # type: ignore[arg-type]
    if as_json:
        click.echo(json.dumps(rows))
        return
    head = [by.upper(), "JOBS", "RUNS", "RUN-S", "GPU-S", "ENERGY-KJ", "TOKENS"]
    if prices is not None:
        head.append(f"COST{' ' + prices.currency if prices.currency else ''}".replace(" ", "-"))
    lines = [head]
    for r in rows:
        energy = f"{r['energy_j'] / 1000:.3f}" + ("?" if r["energy_unknown_runs"] else "")
        line = [str(r[by]), str(r["jobs"]), str(r["runs"]), f"{r['run_s']:.1f}",
                f"{r['gpu_s']:.1f}", energy, str(r["tokens"])]  # fmt: skip
        if prices is not None:
            line.append(f"{r['cost']:.4f}")
        lines.append(line)
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    for row in lines:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    if any(r["energy_unknown_runs"] for r in rows):
        click.echo("? some runs' energy is unknown (no power in their worker's pings)")
