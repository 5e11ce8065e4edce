"""`jetgrid worker-credentials`: give a worker its own NATS user, so no one else can ping as it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from jetgrid import credentials
from jetgrid.coordinator.roles import worker_user_name
from jetgrid.coordinator.settings import Settings
from jetgrid.events import JetgridError, check_id


@click.group("worker-credentials")
def worker_credentials() -> None:
    """Manage the per-worker NATS users: one user per worker id, allowed to publish only its own
    registration and pings (so no worker can forge another's uptime)."""


@worker_credentials.command("add")
@click.argument("worker_id")
@click.option("--pool", help="Limit it to this pool's consumers (with --model).")
@click.option(
    "--model",
    "models",
    multiple=True,
    help="Limit it to this model's consumers (repeatable; with --pool).",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where credentials.json lives. [env JETGRID_DATA_DIR; default ./.jetgrid]",
)
@click.option(
    "--subject-prefix", help="Subject prefix of the deployment. [env JETGRID_SUBJECT_PREFIX]"
)
@click.option(
    "--stream-prefix", help="Stream prefix of the deployment. [env JETGRID_STREAM_PREFIX]"
)
@click.option(
    "--reload/--no-reload",
    default=True,
    show_default=True,
    help="Re-render --data-dir/nats.conf and reload the running `jetgrid up` server.",
)
def add(
    worker_id: str, pool: str | None, models: tuple[str, ...], reload: bool, **flags: Any
) -> None:
    """Create (or show) the NATS user of WORKER_ID and print its settings as environment lines.

    The password goes into --data-dir/credentials.json (mode 0600). If a `jetgrid up` server
    runs on that data dir, its config is re-rendered and reloaded (SIGHUP), so the worker can
    connect at once. For other deployments, render a new config with `jetgrid nats-config`.
    """
    if bool(pool) != bool(models):
        raise click.UsageError("--pool and --model go together.")
    try:
        check_id(worker_id, "worker id")
        settings = Settings.from_env(os.environ, **flags)
        serves = tuple((pool, m) for m in models) if pool else ()
        creds = credentials.ensure(settings.data_dir, {worker_id: serves}, os.environ)
        conf = settings.data_dir / credentials.CONF_NAME
        if reload and conf.exists():
            credentials.write_conf(conf, credentials.render(creds, settings))
            if credentials.reload_server(settings.data_dir):
                click.echo(f"# reloaded the NATS server of {settings.data_dir}", err=True)
        user = worker_user_name(worker_id)
        click.echo(f"JETGRID_NATS_USER={user}")
        click.echo(f"JETGRID_NATS_PASSWORD={creds.password(user)}")
    except JetgridError as exc:
        raise click.ClickException(str(exc)) from exc


@worker_credentials.command("list")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where credentials.json lives. [default ./.jetgrid]",
)
def list_(data_dir: Path | None) -> None:
    """List the worker ids that have a NATS user, with the consumers each is limited to."""
    try:
        settings = Settings.from_env(os.environ, data_dir=data_dir)
        creds = credentials.load(settings.data_dir)
    except JetgridError as exc:
        raise click.ClickException(str(exc)) from exc
    for wid, serves in sorted((creds.workers if creds else {}).items()):
        limits = ", ".join(f"{p}/{m}" for p, m in serves) or "any pool consumer"
        click.echo(f"{wid}\t{worker_user_name(wid)}\t{limits}")
