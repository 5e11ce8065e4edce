"""`jetgrid credentials USER`: the settings to connect as one of the deployment's NATS users."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import click

from jetgrid import credentials as creds_mod
from jetgrid.coordinator.roles import inbox_prefix
from jetgrid.coordinator.settings import Settings
from jetgrid.events import JetgridError


@click.command("credentials")
@click.argument("user")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where credentials.json lives. [env JETGRID_DATA_DIR; default ./.jetgrid]",
)
def credentials(user: str, data_dir: Path | None) -> None:
    """Print `export` lines that make jetgrid commands connect as USER (admin, gateway,
    projector, client or worker-<id>): eval "$(jetgrid credentials client)".

    Also prints the inbox prefix the `nats` CLI needs (--inbox-prefix), as a comment.
    """
    try:
        settings = Settings.from_env(os.environ, data_dir=data_dir)
        creds = creds_mod.load(settings.data_dir, os.environ)
        if creds is None:
            raise click.ClickException(
                f"No credentials in {str(settings.data_dir)!r} yet: run `jetgrid up` (or "
                "`jetgrid nats-config`) there first."
            )
        password = creds.password(user)
    except JetgridError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"export JETGRID_NATS_USER={shlex.quote(user)}")
    click.echo(f"export JETGRID_NATS_PASSWORD={shlex.quote(password)}")
    click.echo(
        f'# nats CLI: nats --user {user} --password "$JETGRID_NATS_PASSWORD" '
        f"--inbox-prefix {inbox_prefix(user)} ..."
    )
