"""The deployment's NATS users: `jetgrid credentials USER` (connect as one), `jetgrid
nats-config` (render the server config with a user per role and per worker) and `jetgrid
worker-credentials` (give a worker its own user, so no one else can ping as it).

Passwords live in <data-dir>/credentials.json (mode 0600), made on first use.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any

import click

from jetgrid import credentials as creds_mod
from jetgrid.cli.shared import (
    data_dir_option,
    models_option,
    one_line_errors,
    pool_option,
    settings_from,
    stream_prefix_option,
    subject_prefix_option,
)
from jetgrid.coordinator.natsconf import (
    COMMITTED,
    NatsConfig,
    ServerTls,
    env_users,
    render_nats_config,
)
from jetgrid.coordinator.roles import ROLES, inbox_prefix, worker_user_name
from jetgrid.events import check_id


@click.command("credentials")
@click.argument("user")
@data_dir_option("Where credentials.json lives.")
def credentials(user: str, data_dir: Path | None) -> None:
    """Print `export` lines that make jetgrid commands connect as USER (admin, gateway,
    projector, client or worker-<id>): eval "$(jetgrid credentials client)".

    Also prints the inbox prefix the `nats` CLI needs (--inbox-prefix), as a comment.
    """
    with one_line_errors():
        settings = settings_from(data_dir=data_dir)
        creds = creds_mod.load(settings.data_dir, os.environ)
        if creds is None:
            raise click.ClickException(
                f"No credentials in {str(settings.data_dir)!r} yet: run `jetgrid up` (or "
                "`jetgrid nats-config`) there first."
            )
        password = creds.password(user)
    click.echo(f"export JETGRID_NATS_USER={shlex.quote(user)}")
    click.echo(f"export JETGRID_NATS_PASSWORD={shlex.quote(password)}")
    click.echo(
        f'# nats CLI: nats --user {user} --password "$JETGRID_NATS_PASSWORD" '
        f"--inbox-prefix {inbox_prefix(user)} ..."
    )


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
@data_dir_option("Where credentials.json lives (created if missing).")
@subject_prefix_option
@stream_prefix_option
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
    with one_line_errors():
        settings = settings_from(**flags)
        if bool(tls_cert) != bool(tls_key):
            raise click.UsageError("--tls-cert and --tls-key go together.")
        tls = ServerTls(tls_cert, tls_key, tls_ca, tls_verify) if tls_cert and tls_key else None
        extra: dict[str, Any] = {"tiers_bucket": tiers_bucket or settings.tiers_bucket}
        if python_submitters:
            extra["python_submitters"] = python_submitters
        if env_secrets:
            text = render_nats_config(
                NatsConfig(
                    deployment=creds_mod.deployment(settings, **extra),
                    users=env_users(workers),
                    listen=listen,
                    tls=tls,
                    header="Rendered by `jetgrid nats-config --env-secrets`.",
                )
            )
        else:
            creds = creds_mod.ensure(settings.data_dir, dict.fromkeys(workers, ()), os.environ)
            text = creds_mod.render(creds, settings, tls=tls, listen=listen, **extra)
    if out is None:
        click.echo(text, nl=False)
    else:
        creds_mod.write_conf(out, text)
        click.echo(f"wrote {out}", err=True)


def write_env_file(path: Path, workers: tuple[str, ...]) -> int:
    """Add a random password line for each user of the committed config (and `workers`)."""
    existing = path.read_text().splitlines() if path.exists() else []
    have = {line.split("=", 1)[0] for line in existing if "=" in line}
    wanted = [s.env for _, s in (*(COMMITTED.users or ()), *env_users(workers)) if s.env]
    new = [
        f"{name}={creds_mod.new_password()}" for name in dict.fromkeys(wanted) if name not in have
    ]
    creds_mod.write_conf(path, "".join(f"{line}\n" for line in [*existing, *new]))
    return len(new)


@click.group("worker-credentials")
def worker_credentials() -> None:
    """Manage the per-worker NATS users: one user per worker id, allowed to publish only its own
    registration and pings (so no worker can forge another's uptime)."""


@worker_credentials.command("add")
@click.argument("worker_id")
@pool_option("Limit it to this pool's consumers (with --model).")
@models_option("Limit it to this model's consumers (repeatable; with --pool).")
@data_dir_option("Where credentials.json lives.")
@subject_prefix_option
@stream_prefix_option
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
    with one_line_errors():
        check_id(worker_id, "worker id")
        settings = settings_from(**flags)
        serves = tuple((pool, m) for m in models) if pool else ()
        creds = creds_mod.ensure(settings.data_dir, {worker_id: serves}, os.environ)
        conf = settings.data_dir / creds_mod.CONF_NAME
        if reload and conf.exists():
            creds_mod.write_conf(conf, creds_mod.render(creds, settings))
            if creds_mod.reload_server(settings.data_dir):
                click.echo(f"# reloaded the NATS server of {settings.data_dir}", err=True)
        user = worker_user_name(worker_id)
        click.echo(f"JETGRID_NATS_USER={user}")
        click.echo(f"JETGRID_NATS_PASSWORD={creds.password(user)}")


@worker_credentials.command("list")
@data_dir_option("Where credentials.json lives.")
def list_(data_dir: Path | None) -> None:
    """List the worker ids that have a NATS user, with the consumers each is limited to."""
    with one_line_errors():
        settings = settings_from(data_dir=data_dir)
        creds = creds_mod.load(settings.data_dir)
    for wid, serves in sorted((creds.workers if creds else {}).items()):
        limits = ", ".join(f"{p}/{m}" for p, m in serves) or "any pool consumer"
        click.echo(f"{wid}\t{worker_user_name(wid)}\t{limits}")
