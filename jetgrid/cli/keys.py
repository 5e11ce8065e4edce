"""`jetgrid keys`: create and list the gateway's API keys (only their hashes are stored)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import click

from jetgrid.cli.shared import data_dir_option, one_line_errors, settings_from
from jetgrid.gateway.auth import ApiKey, hash_key, key_line, keys_path, load_keys, new_key

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _split(value: str | None) -> tuple[str, ...] | None:
    if not value:
        return None
    return tuple(p.strip() for p in value.split(",") if p.strip()) or None


def _load(path: Path) -> list[ApiKey]:
    try:
        return load_keys(path, None)
    except ValueError as exc:  # a line that is no key hash: say which, and what to do
        raise click.ClickException(
            f"{exc} Fix or remove that line; `jetgrid keys add` writes valid ones."
        ) from None


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
    """


@keys.command("add")
@click.argument("name")
@click.option("--pools", help="Comma-separated pools the key may submit to (default: all).")
@click.option("--models", help="Comma-separated model patterns, e.g. 'llama*,echo' (default: all).")
@click.option(
    "--rate", type=float, help="Requests per second for this key (default: the gateway's)."
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
