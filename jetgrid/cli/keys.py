"""`jetgrid keys`: create, list and revoke the gateway's API keys (only their hashes are stored).

A running gateway reloads the keys file within seconds of a change (gateway.auth.KeyRing), so
`add` and `revoke` take effect without a restart.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import click

from jetgrid.cli.shared import data_dir_option, one_line_errors, settings_from
from jetgrid.gateway.auth import (
    ApiKey,
    KeysFileError,
    check_rate,
    hash_key,
    key_line,
    keys_path,
    load_keys,
    new_key,
    without_key,
)

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _split(value: str | None) -> tuple[str, ...] | None:
    if not value:
        return None
    return tuple(p.strip() for p in value.split(",") if p.strip()) or None


def _load(path: Path) -> list[ApiKey]:
    try:
        return load_keys(path, None)
    except KeysFileError as exc:  # the message names the line and what to do
        raise click.ClickException(str(exc)) from None


def _rate(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is None:
        return None
    try:
        return check_rate(value, "--rate")
    except KeysFileError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def _write(path: Path, text: str) -> None:
    """Replace the keys file at once (a gateway never reads half of it), mode 0600."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _path(keys_file: Path | None, data_dir: Path | None) -> Path:
    with one_line_errors():
        settings = settings_from(api_keys_file=keys_file, data_dir=data_dir)
    return keys_path(settings)


_file_opt = click.option(
    "--keys-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The keys file. [env JETGRID_API_KEYS_FILE; default <data-dir>/api-keys]",
)
_DATA_DIR_HELP = "Where the default keys file lives."


@click.group()
def keys() -> None:
    """Manage the gateway's API keys.

    Keys are stored as SHA-256 hashes, one a line, in the keys file; once a key exists, the
    gateway asks for `Authorization: Bearer <key>` on every route but /healthz and /readyz.
    A running gateway picks up added and revoked keys within seconds, without a restart.
    """


@keys.command("add")
@click.argument("name")
@click.option("--pools", help="Comma-separated pools the key may submit to (default: all).")
@click.option("--models", help="Comma-separated model patterns, e.g. 'llama*,echo' (default: all).")
@click.option(
    "--rate",
    type=float,
    callback=_rate,
    help="Requests per second for this key, positive (default: the gateway's).",
)
@_file_opt
@data_dir_option(_DATA_DIR_HELP)
def add(
    name: str,
    pools: str | None,
    models: str | None,
    rate: float | None,
    keys_file: Path | None,
    data_dir: Path | None,
) -> None:
    """Create a key called NAME, print it once, and store only its hash."""
    if not _NAME.match(name):
        raise click.BadParameter(f"{name!r}: use 1-64 letters, digits, '.', '_' or '-'.")
    path = _path(keys_file, data_dir)
    existing = _load(path)
    if any(k.name == name for k in existing):
        raise click.ClickException(f"A key named {name!r} already exists in {path}.")
    key = new_key()
    entry = ApiKey(
        hash=hash_key(key), name=name, pools=_split(pools), models=_split(models), rate=rate
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(key_line(entry) + "\n")
    os.chmod(path, 0o600)
    click.echo(key)
    click.echo(f"Stored the hash of key {name!r} in {path}. The key is not shown again.", err=True)


@keys.command("list")
@_file_opt
@data_dir_option(_DATA_DIR_HELP)
def list_keys(keys_file: Path | None, data_dir: Path | None) -> None:
    """List key names and scopes (never the keys)."""
    path = _path(keys_file, data_dir)
    for k in _load(path):
        scope = f"pools={','.join(k.pools) if k.pools else '*'} "
        scope += f"models={','.join(k.models) if k.models else '*'}"
        rate = f" rate={k.rate:g}/s" if k.rate is not None else ""
        click.echo(f"{k.name}  {scope}{rate}  {k.hash[:19]}…")


@keys.command("revoke")
@click.argument("name")
@_file_opt
@data_dir_option(_DATA_DIR_HELP)
def revoke(name: str, keys_file: Path | None, data_dir: Path | None) -> None:
    """Remove the key called NAME; running gateways refuse it within seconds."""
    path = _path(keys_file, data_dir)
    _load(path)  # a broken file is named, not half-rewritten
    text = path.read_text() if path.exists() else ""
    try:
        rest, removed = without_key(text, name, str(path))
    except KeysFileError as exc:
        raise click.ClickException(str(exc)) from None
    if not removed:
        raise click.ClickException(
            f"No key named {name!r} in {path}; `jetgrid keys list` shows the names."
        )
    _write(path, rest)
    left = len(load_keys(path, None))
    tail = "" if left else " No keys are left: the gateway is open again."
    click.echo(f"Revoked key {name!r} in {path}.{tail}", err=True)


@keys.command("secret")
@click.argument("name")
@_file_opt
@data_dir_option(_DATA_DIR_HELP)
def secret(name: str, keys_file: Path | None, data_dir: Path | None) -> None:
    """Print the webhook secret (whsec_...) that signs the webhooks of key NAME's jobs.

    It is derived from the key, so it changes when the key is revoked and added again; give
    it to the receiver of the key's webhooks to verify their webhook-signature header.
    """
    from jetgrid.coordinator.webhooks import key_secret

    path = _path(keys_file, data_dir)
    found = next((k for k in _load(path) if k.name == name), None)
    if found is None:
        raise click.ClickException(
            f"No key named {name!r} in {path}; `jetgrid keys list` shows the names."
        )
    click.echo(key_secret(found.hash))
