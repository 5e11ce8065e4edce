"""`jetgrid replay`: rebuild every read model from sequence 1 into a fresh database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from jetgrid.cli.shared import (
    archive_option,
    nats_options,
    read_model_options,
    run_async,
    settings_from,
    setup_logging,
    stream_progress,
)

STREAM_NAMES = ("WORKERS", "JOBS", "JOB_EVENTS")


def parse_until_seq(value: str | None) -> dict[str, int] | None:
    """``"120"`` -> {"WORKERS": 120}; ``"WORKERS=120,JOBS=40"`` -> both; else BadParameter."""
    if not value:
        return None
    out: dict[str, int] = {}
    for part in value.split(","):
        name, _, num = part.strip().rpartition("=")
        name = name.strip().upper() or "WORKERS"
        if name not in STREAM_NAMES:
            raise click.BadParameter(
                f"{part.strip()!r} names no stream; use WORKERS, JOBS or JOB_EVENTS",
                param_hint="--until-seq",
            )
        try:
            n = int(num)
        except ValueError:
            raise click.BadParameter(
                f"{num!r} is not a sequence number", param_hint="--until-seq"
            ) from None
        if n < 0:
            raise click.BadParameter(f"{n} is negative", param_hint="--until-seq")
        out[name] = n
    return out


def db_url_of(db: str) -> str:
    """A path becomes a SQLite URL; a URL (with ://) is used as is."""
    return db if "://" in db else f"sqlite+aiosqlite:///{Path(db).resolve()}"


def _check_fresh(db: str) -> None:
    if "://" in db:
        return
    if Path(db).exists():
        raise click.ClickException(
            f"{db} exists; replay builds a fresh database: remove it or choose another path."
        )
    if not Path(db).resolve().parent.is_dir():
        raise click.ClickException(
            f"{db}: its directory does not exist; create it or choose another path."
        )


@click.command()
@nats_options
@read_model_options
@click.option(
    "--db",
    "db",
    required=True,
    help="Fresh database to build: a SQLite file path (must not exist) or an SQLAlchemy async URL of an empty database.",
)
@click.option(
    "--until",
    "until",
    default=None,
    help="Stop each stream after its last message stored at or before this RFC 3339 time (the stream's own timestamp).",
)
@click.option(
    "--until-seq",
    "until_seq",
    default=None,
    help="Stop at these stream sequences: N (WORKERS up to N; JOBS and JOB_EVENTS to their end) or STREAM=N pairs, e.g. WORKERS=1200,JOBS=80,JOB_EVENTS=400.",
)
@archive_option
@click.option("--quiet", is_flag=True, help="No progress bar; print only the digest line.")
@run_async
async def replay(
    db: str,
    until: str | None,
    until_seq: str | None,
    archive_dir: Path | None,
    quiet: bool,
    **flags: Any,
) -> None:
    """Rebuild every read model from sequence 1 into a fresh database and print its digest.

    Reads WORKERS, then JOBS, then JOB_EVENTS, each up to its last sequence when the replay
    starts (or --until / --until-seq), folding with the same reducers as the live projector, and
    prints `digest sha256:<hex>` over a canonical dump of every row. The same log replayed to the
    same positions always gives the same digest, and so does the live projector's database at
    those positions. Nothing is published (no KV puts, no invalid records). With --archive, each
    stream is read from the archive first and from the stream after it, with the same digest as
    a replay of the whole log.
    """
    from jetgrid.coordinator.bus import Bus
    from jetgrid.events import parse_time
    from jetgrid.events.errors import InvalidEvent
    from jetgrid.projections.archive import ArchiveDir
    from jetgrid.projections.fold import fold_config
    from jetgrid.projections.replay import replay as run_replay
    from jetgrid.projections.store import Store

    if until and until_seq:
        raise click.UsageError("Give --until or --until-seq, not both.")
    try:
        until_time = parse_time(until, "--until") if until else None
    except InvalidEvent as exc:
        raise click.BadParameter(str(exc), param_hint="--until") from None
    caps = parse_until_seq(until_seq)
    url = db_url_of(db)
    _check_fresh(db)
    settings = settings_from(**flags)
    setup_logging(settings)
    config = fold_config(settings)
    archive = ArchiveDir(archive_dir, settings) if archive_dir else None
    store = Store(url)
    bus = await Bus.connect(settings, name="jetgrid-replay")
    try:
        with stream_progress(quiet) as progress:
            result = await run_replay(
                settings, store, bus, config, until_seq=caps, until_time=until_time,
                progress=progress, archive=archive,
            )  # fmt: skip
        if not quiet:
            pos = ", ".join(f"{k}={v}" for k, v in result.positions.items())
            click.echo(
                f"replayed {result.messages} messages in {result.seconds:.2f} s ({result.rate:,.0f}/s) to {pos}"
            )
            if result.invalid:
                click.echo(f"skipped {result.invalid} messages that are not valid events")
            click.echo(f"database {url}")
        click.echo(f"digest sha256:{result.digest}")
    except InvalidEvent as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        await bus.close()
        await store.close()
