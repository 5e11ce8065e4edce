"""What the commands share: settings from flags, logging, error handling, and every option that
more than one command takes, each defined here once.

Command modules import from here, never from the package (jetgrid/cli/__init__.py imports
them to build the group), so each imports on its own in a fresh interpreter. Heavy imports stay
inside the command functions: `jetgrid --help` loads every command module.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast, get_args

import click

from jetgrid.coordinator.settings import Settings
from jetgrid.events import JetgridError, Priority

F = TypeVar("F", bound=Callable[..., Any])


# -- settings, logging, errors --------------------------------------------------------------

StreamProgress = Callable[[str, int, int], None]


@contextlib.contextmanager
def stream_progress(quiet: bool) -> Iterator[StreamProgress | None]:
    """One progress bar per stream for a long read (replay, audit, archive): yields the
    `progress(stream, done, total)` callback the readers take, or None when `quiet`."""
    if quiet:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description:<11}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), transient=False) as bar:
        tasks: dict[str, Any] = {}

        def progress(stream: str, done: int, total: int) -> None:
            if stream not in tasks:
                tasks[stream] = bar.add_task(stream, total=total or 1)
            bar.update(tasks[stream], completed=done if total else 1, total=total or 1)

        yield progress


def settings_from(**flags: Any) -> Settings:
    """Settings from JETGRID_* variables, then the flags given (None means not given)."""
    return Settings.from_env(os.environ, **flags)


def nats_url_given(flags: dict[str, Any]) -> bool:
    """Whether the user named a NATS server (--nats-url or JETGRID_NATS_URL): else we may start one."""
    return flags.get("nats_url") is not None or "JETGRID_NATS_URL" in os.environ


def setup_logging(settings: Settings) -> None:
    """Configure logging as the settings say (warnings only unless -v)."""
    from jetgrid.logs import configure

    configure(settings.log_level, settings.log_json)


def settle_heap() -> None:
    """Keep every object alive now out of the cyclic collector's scans (`gc.freeze`). Each
    long-running command calls it once its service is ready: what start-up made (modules,
    classes, pydantic schemas, routes, connections) lives as long as the process, and without
    this every full collection walked all of it again, stopping the event loop for 58-78 ms at
    a time in the gateway and 19-38 ms in the worker (bench/README-gateway.md). No collection
    first: it would stop the loop as long (40-60 ms) to find almost nothing (0-16 objects).
    Garbage made afterwards is collected as before."""
    gc.freeze()


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    """Turn a JetgridError (a sentence naming the value and the fix), or a file the system
    refused, into click's one-line `Error: ...` and exit status 1, never a traceback. A refusal
    by NATS permissions names the refused subject and says which user to run as."""
    from jetgrid.coordinator.errors import PermissionDenied

    try:
        yield
    except PermissionDenied as exc:
        raise click.ClickException(
            f"{str(exc).rstrip('.')}; run this as a NATS user whose role allows it (see "
            "README.md, Roles and credentials)."
        ) from exc
    except JetgridError as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:
        if exc.filename is None:  # not about a path the user gave: let it show where it came from
            raise
        raise click.ClickException(
            f"Cannot use {str(exc.filename)!r}: {exc.strerror}; check the path and its permissions."
        ) from exc


def run_async(f: F) -> F:
    """Run an async command; jetgrid's errors become one line and exit 1, Ctrl-C exits 130."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with one_line_errors():
                return asyncio.run(f(*args, **kwargs))
        except KeyboardInterrupt:
            sys.exit(130)

    return cast(F, wrapper)


def _apply(options: list[Callable[[Any], Any]], f: F) -> F:
    """Apply click options so that --help lists them in the order given."""
    for opt in reversed(options):
        f = opt(f)
    return f


# -- naming and connection --------------------------------------------------------------------

subject_prefix_option = click.option("--subject-prefix", help="First token of every jetgrid subject. [env JETGRID_SUBJECT_PREFIX; default jetgrid]")  # fmt: skip
stream_prefix_option = click.option("--stream-prefix", help="Prepended to stream names (JOBS -> <prefix>JOBS). [env JETGRID_STREAM_PREFIX]")  # fmt: skip

_NATS_OPTIONS: list[Callable[[Any], Any]] = [
    click.option("--nats-url", help="NATS server URL(s), comma-separated. [env JETGRID_NATS_URL; default nats://127.0.0.1:4222]"),
    click.option("--nats-user", help="NATS user name. [env JETGRID_NATS_USER]"),
    click.option("--nats-password", help="NATS password. [env JETGRID_NATS_PASSWORD]"),
    click.option("--nats-token", help="NATS auth token. [env JETGRID_NATS_TOKEN]"),
    click.option("--nats-creds", type=click.Path(dir_okay=False, path_type=Path), help="NATS credentials file (JWT + nkey). [env JETGRID_NATS_CREDS]"),
    click.option("--nats-tls-ca", type=click.Path(dir_okay=False, path_type=Path), help="CA certificate to verify the NATS server. [env JETGRID_NATS_TLS_CA]"),
    click.option("--nats-tls-cert", type=click.Path(dir_okay=False, path_type=Path), help="Client certificate for mutual TLS. [env JETGRID_NATS_TLS_CERT]"),
    click.option("--nats-tls-key", type=click.Path(dir_okay=False, path_type=Path), help="Client key for mutual TLS. [env JETGRID_NATS_TLS_KEY]"),
    subject_prefix_option,
    stream_prefix_option,
    click.option("-v", "--verbose", "log_level", flag_value="info", default=None, help="Log what each component does (default: warnings only)."),
    click.option("--log-json", is_flag=True, default=None, help="Log JSON lines instead of text."),
]  # fmt: skip


def nats_options(f: F) -> F:
    """Connection flags shared by every command that talks to NATS."""
    return _apply(_NATS_OPTIONS, f)


def data_dir_option(holds: str) -> Callable[[F], F]:
    """--data-dir; `holds` says what the command keeps or finds there, as a sentence."""
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        help=f"{holds} [env JETGRID_DATA_DIR; default ./.jetgrid]",
    )


# -- read models --------------------------------------------------------------------------------

archive_option = click.option(
    "--archive",
    "archive_dir",
    default=None,
    type=click.Path(file_okay=False, path_type=Path),
    help="Read what `jetgrid archive` wrote to this directory first, then the streams from where it ends.",
)
db_url_option = click.option("--db-url", help="SQLAlchemy async URL of the read-model database, e.g. postgresql+asyncpg://u:p@host/jetgrid. [env JETGRID_DB_URL; default sqlite+aiosqlite:///<data-dir>/jetgrid.db]")  # fmt: skip

_READ_MODEL_OPTIONS: list[Callable[[Any], Any]] = [
    db_url_option,
    data_dir_option("Where the default SQLite database lives."),
    click.option("--tier-policy", help="Tiers as min_uptime:factor pairs, e.g. 0.99:1.0,0.95:0.5,0.90:0.1,0:0. [env JETGRID_TIER_POLICY]"),
    click.option("--tier-policy-file", type=click.Path(dir_okay=False), help="Tier policy as a TOML file. [env JETGRID_TIER_POLICY_FILE]"),
    click.option("--uptime-windows", help="Uptime windows, e.g. 1h,24h. [env JETGRID_UPTIME_WINDOWS; default 1h,24h]"),
    click.option("--tier-window", help="The window tiers are judged over (one of --uptime-windows). [default: the first]"),
]  # fmt: skip


def read_model_options(f: F) -> F:
    """Flags for what the read models depend on (database, tier policy, uptime windows)."""
    return _apply(_READ_MODEL_OPTIONS, f)


# -- jobs ---------------------------------------------------------------------------------------


def pool_option(
    help: str, *, default: str | None = None, required: bool = False
) -> Callable[[F], F]:
    """--pool, one pool name; `help` says what the pool is for in this command. No default is
    passed when there is none: click 8.3+ takes an explicit `default=None` as a value, and a
    required --pool would then go unchecked."""
    if default is None:
        return click.option("--pool", required=required, help=help)
    return click.option("--pool", default=default, required=required, show_default=True, help=help)


def model_option(help: str) -> Callable[[F], F]:
    """--model, one model name, required."""
    return click.option("--model", required=True, help=help)


def models_option(help: str) -> Callable[[F], F]:
    """--model, repeatable, into the `models` tuple."""
    return click.option("--model", "models", multiple=True, help=help)


def priority_option(help: str) -> Callable[[F], F]:
    """--priority of a job: high, normal (the default) or low."""
    return click.option(
        "--priority",
        type=click.Choice(get_args(Priority)),
        default="normal",
        show_default=True,
        help=help,
    )


def wait_option(help: str) -> Callable[[F], F]:
    """--wait SECONDS for a job's outcome (default: do not wait)."""
    return click.option("--wait", type=float, default=None, help=help)


def json_option(help: str) -> Callable[[F], F]:
    """--json, into `as_json`: machine-readable output instead of text."""
    return click.option("--json", "as_json", is_flag=True, help=help)
