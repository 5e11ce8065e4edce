"""`jetgrid nats-config`: render the NATS server configuration (roles, users, TLS) for a deployment."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from jetgrid import credentials
from jetgrid.coordinator.natsconf import (
    COMMITTED,
    NatsConfig,
    ServerTls,
    env_users,
    render_nats_config,
)
from jetgrid.coordinator.roles import ROLES
from jetgrid.coordinator.settings import Settings
from jetgrid.events import JetgridError


@click.command("nats-config")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the config here (mode 0600) instead of printing it.",
)
@click.option(
    "--env-secrets",
    is_flag=True,
    help="Refer to passwords as $JETGRID_NATS_PASSWORD_<USER> environment variables (no secret in the file) instead of writing them in.",
)
@click.option(
    "--write-env",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Instead of a config, write generated passwords for the committed nats.conf's users (and --worker ids) as JETGRID_NATS_PASSWORD_<USER>=... lines to this file (mode 0600; existing lines are kept), e.g. .env for docker compose.",
)
@click.option(
    "--worker", "workers", multiple=True, help="Add a user for this worker id (repeatable)."
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where credentials.json lives (created if missing). [env JETGRID_DATA_DIR; default ./.jetgrid]",
)
@click.option(
    "--subject-prefix",
    help="First token of every jetgrid subject. [env JETGRID_SUBJECT_PREFIX; default jetgrid]",
)
@click.option("--stream-prefix", help="Prepended to stream names. [env JETGRID_STREAM_PREFIX]")
@click.option(
    "--listen",
    default="0.0.0.0:4222",
    show_default=True,
    help="Client listen address of the server.",
)
@click.option(
    "--tiers-bucket",
    default=None,
    show_default=True,
    help="KV bucket the projector writes worker tiers to. [default: <stream prefix>TIERS]",
)
@click.option(
    "--python-submitter",
    "python_submitters",
    multiple=True,
    type=click.Choice(ROLES),
    help="Role allowed to submit `python` jobs (repeatable). [default: gateway]",
)
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Server certificate: turns TLS on.",
)
@click.option(
    "--tls-key", type=click.Path(dir_okay=False, path_type=Path), help="Server private key."
)
@click.option(
    "--tls-ca",
    type=click.Path(dir_okay=False, path_type=Path),
    help="CA that signs client certificates.",
)
@click.option("--tls-verify", is_flag=True, help="Require client certificates (mutual TLS).")
def nats_config(
    out: Path | None,
    env_secrets: bool,
    write_env: Path | None,
    workers: tuple[str, ...],
    listen: str,
    tiers_bucket: str | None,
    python_submitters: tuple[str, ...],
    tls_cert: Path | None,
    tls_key: Path | None,
    tls_ca: Path | None,
    tls_verify: bool,
    **flags: Any,
) -> None:
    """Render the nats-server configuration: one account, a user per role and per worker.

    Each role (admin, gateway, projector, client, worker-<id>) gets the least publish and
    subscribe permissions its component needs and a private inbox prefix (_INBOX_<user>).
    Passwords come from --data-dir/credentials.json (generated on first use, mode 0600), or,
    with --env-secrets, from environment variables that nats-server reads at start.
    """
    if write_env is not None:
        added = write_env_file(write_env, workers)
        click.echo(f"wrote {write_env} ({added} new password(s))", err=True)
        return
    try:
        settings = Settings.from_env(os.environ, **flags)
        if bool(tls_cert) != bool(tls_key):
            raise click.UsageError("--tls-cert and --tls-key go together.")
        tls = ServerTls(tls_cert, tls_key, tls_ca, tls_verify) if tls_cert and tls_key else None
        extra: dict[str, Any] = {"tiers_bucket": tiers_bucket or settings.tiers_bucket}
        if python_submitters:
            extra["python_submitters"] = python_submitters
        if env_secrets:
            text = render_nats_config(
                NatsConfig(
                    deployment=credentials.deployment(settings, **extra),
                    users=env_users(workers),
                    listen=listen,
                    tls=tls,
                    header="Rendered by `jetgrid nats-config --env-secrets`.",
                )
            )
        else:
            creds = credentials.ensure(settings.data_dir, dict.fromkeys(workers, ()), os.environ)
            text = credentials.render(creds, settings, tls=tls, listen=listen, **extra)
    except JetgridError as exc:
        raise click.ClickException(str(exc)) from exc
    if out is None:
        click.echo(text, nl=False)
    else:
        credentials.write_conf(out, text)
        click.echo(f"wrote {out}", err=True)


def write_env_file(path: Path, workers: tuple[str, ...]) -> int:
    """Add a random password line for each user of the committed config (and `workers`)."""
    existing = path.read_text().splitlines() if path.exists() else []
    have = {line.split("=", 1)[0] for line in existing if "=" in line}
    wanted = [s.env for _, s in (*(COMMITTED.users or ()), *env_users(workers)) if s.env]
    new = [
        f"{name}={credentials.new_password()}" for name in dict.fromkeys(wanted) if name not in have
    ]
    credentials.write_conf(path, "".join(f"{line}\n" for line in [*existing, *new]))
    return len(new)
