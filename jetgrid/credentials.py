"""NATS passwords of a deployment: generated on first use into ``<data dir>/credentials.json``.

The file (mode 0600, never committed) maps each user (admin, gateway, projector, client and
``worker-<id>`` per worker) to its password, and remembers which (pool, model)s each worker
serves. A password given in the environment as ``JETGRID_NATS_PASSWORD_<USER>`` wins over the
file and is not written to it. `jetgrid up` renders ``<data dir>/nats.conf`` (also 0600) from it;
`jetgrid nats-config` renders it for other deployments.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from jetgrid.coordinator.natsconf import NatsConfig, Secret, ServerTls, render_nats_config
from jetgrid.coordinator.roles import (
    SERVICE_USERS,
    Deployment,
    User,
    password_env,
    service_user,
    worker_user,
    worker_user_name,
)
from jetgrid.coordinator.settings import Settings
from jetgrid.events import ConfigError, check_id

FILE_NAME = "credentials.json"
CONF_NAME = "nats.conf"
PID_NAME = "nats-server.pid"

Serves = tuple[tuple[str, str], ...]


@dataclass
class Credentials:
    """Passwords by user name, and the (pool, model)s of each worker id."""

    path: Path
    passwords: dict[str, str] = field(default_factory=dict)
    workers: dict[str, Serves] = field(default_factory=dict)
    from_env: dict[str, str] = field(default_factory=dict)

    def password(self, user: str) -> str:
        if user in self.from_env:
            return self.from_env[user]
        try:
            return self.passwords[user]
        except KeyError:
            raise ConfigError(
                f"No NATS password for user {user!r} in {str(self.path)!r}. For a worker, "
                f"add it with `jetgrid worker-credentials add <id>`."
            ) from None

    def users(self) -> list[User]:
        return [service_user(r) for r in SERVICE_USERS] + [
            worker_user(w, serves) for w, serves in sorted(self.workers.items())
        ]

    def settings_for(self, settings: Settings, user: str) -> Settings:
        """`settings` connecting as `user` (its inbox prefix follows from the name)."""
        return settings.replace(nats_user=user, nats_password=self.password(user))

    def worker_settings(self, settings: Settings, worker_id: str) -> Settings:
        return self.settings_for(settings, worker_user_name(worker_id))


def new_password() -> str:
    """A random password. It starts with letters: nats-server parses an environment variable's
    value like a config value, and one starting with a digit could read as a number or size."""
    return "jg" + secrets.token_urlsafe(24)


def deployment(
    settings: Settings,
    *,
    tiers_bucket: str | None = None,
    python_submitters: tuple[str, ...] | None = None,
) -> Deployment:
    """The deployment `settings` name: prefixes and tiers bucket (and who may submit python)."""
    d = Deployment(
        settings.subject_prefix, settings.stream_prefix, tiers_bucket or settings.tiers_bucket
    )
    return d if python_submitters is None else replace(d, python_submitters=python_submitters)


def _env_passwords(env: Mapping[str, str], names: Iterable[str]) -> dict[str, str]:
    return {n: env[password_env(n)] for n in names if env.get(password_env(n))}


def load(data_dir: Path, env: Mapping[str, str] | None = None) -> Credentials | None:
    path = Path(data_dir) / FILE_NAME
    if not path.exists():
        return None
    try:
        raw = json.loads(path.read_text())
        creds = Credentials(
            path,
            passwords=dict(raw["passwords"]),
            workers={
                w: tuple((str(p), str(m)) for p, m in s) for w, s in raw.get("workers", {}).items()
            },
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"Credentials file {str(path)!r} is not readable: {exc}.") from exc
    creds.from_env = _env_passwords(env or {}, [u.name for u in creds.users()])
    return creds


def save(creds: Credentials) -> None:
    """Write atomically, readable by the owner only."""
    body = {
        "passwords": creds.passwords,
        "workers": {w: [list(s) for s in serves] for w, serves in sorted(creds.workers.items())},
    }
    _write_private(creds.path, json.dumps(body, indent=2) + "\n")


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def ensure(
    data_dir: Path,
    workers: Mapping[str, Serves] | None = None,
    env: Mapping[str, str] | None = None,
) -> Credentials:
    """Load the credentials, adding a password for every missing user (and the given workers)."""
    creds = load(data_dir, env) or Credentials(Path(data_dir) / FILE_NAME)
    changed = not creds.path.exists()
    for wid, serves in (workers or {}).items():
        check_id(wid, "worker id")
        if creds.workers.get(wid) != tuple(serves):
            creds.workers[wid] = tuple(serves)
            changed = True
    for user in creds.users():
        if user.name not in creds.passwords:
            creds.passwords[user.name] = new_password()
            changed = True
    creds.from_env = _env_passwords(env or {}, [u.name for u in creds.users()])
    if changed:
        save(creds)
    return creds


def render(
    creds: Credentials,
    settings: Settings,
    *,
    tls: ServerTls | None = None,
    listen: str | None = None,
    tiers_bucket: str | None = None,
    python_submitters: tuple[str, ...] | None = None,
) -> str:
    """The nats-server config for these users, with their passwords written in."""
    users = tuple((u, Secret(value=creds.password(u.name))) for u in creds.users())
    return render_nats_config(
        NatsConfig(
            deployment=deployment(
                settings, tiers_bucket=tiers_bucket, python_submitters=python_submitters
            ),
            users=users,
            listen=listen or f"{settings.nats_host}:{settings.nats_port}",
            tls=tls,
            header=f"Rendered by jetgrid from {creds.path}; holds passwords: keep it 0600.",
        )
    )


def write_conf(path: Path, text: str) -> None:
    _write_private(path, text)


def reload_server(data_dir: Path) -> bool:
    """SIGHUP the nats-server of `jetgrid up` in `data_dir` (applies user changes); True if sent."""
    pid_file = Path(data_dir) / PID_NAME
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError):
        return False
    return True


__all__ = [
    "CONF_NAME",
    "FILE_NAME",
    "PID_NAME",
    "Credentials",
    "deployment",
    "ensure",
    "load",
    "new_password",
    "reload_server",
    "render",
    "save",
    "write_conf",
]
