"""`jetgrid archive`: copy what is about to age out of the streams into compressed files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from jetgrid.cli.shared import (
    nats_options,
    run_async,
    settings_from,
    setup_logging,
    stream_progress,
)


@click.command()
@nats_options
@click.option(
    "--dir",
    "directory",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Archive directory (created if missing); each run adds what is new to it.",
)
@click.option(
    "--before",
    default=None,
    help="Archive every message stored before this RFC 3339 time, whatever the retention.",
)
@click.option(
    "--margin",
    default="1d",
    show_default=True,
    help="Without --before: archive what ages out within this long (e.g. 12h, 2d).",
)
@click.option("--quiet", is_flag=True, help="No progress bar; print only the summary lines.")
@run_async
async def archive(
    directory: Path, before: str | None, margin: str, quiet: bool, **flags: Any
) -> None:
    """Write the messages that are about to age out of WORKERS, JOBS, JOB_EVENTS and INVALID to
    gzip JSON-lines files in --dir, with a manifest (format in the README).

    Each stream is archived from the sequence after the last one already in --dir up to its
    cut-off: --before, else now minus the stream's retention plus --margin. Running it twice adds
    nothing the second time. `jetgrid replay --archive DIR` reads the files back.
    """
    from datetime import UTC, datetime

    from jetgrid.coordinator.bus import Bus
    from jetgrid.events import parse_time
    from jetgrid.events.errors import InvalidEvent
    from jetgrid.events.streams import parse_retention
    from jetgrid.projections.archive import ArchiveDir
    from jetgrid.projections.archiver import archive_streams

    try:
        cut = parse_time(before, "--before") if before else None
    except InvalidEvent as exc:
        raise click.BadParameter(str(exc), param_hint="--before") from None
    try:
        margin_s = parse_retention(margin, "--margin").max_age_s
    except Exception:
        raise click.BadParameter(
            f"{margin!r} is not a duration such as '12h' or '2d'", param_hint="--margin"
        ) from None
    settings = settings_from(**flags)
    setup_logging(settings)
    store = ArchiveDir(directory, settings, create=True)
    bus = await Bus.connect(settings, name="jetgrid-archive")
    try:
        now = datetime.now(UTC)
        with stream_progress(quiet) as progress:
            report = await archive_streams(
                settings, bus, store, now=now, margin_s=margin_s, before=cut, progress=progress
            )
    finally:
        await bus.close()
    for line in report.lines():
        click.echo(line)
    for warning in report.at_risk:
        click.echo(f"Warning: {warning}.", err=True)
    click.echo(f"archive {directory}")
