"""Render a nats-server configuration for a jetgrid deployment (a pure function of its inputs).

`render_nats_config` writes the server block (JetStream with ``sync_interval: always``), one
account holding every jetgrid user with its role's permissions (`coordinator.roles`), and an
optional TLS block. Passwords are either literal (the embedded default writes the config, mode
0600, into its data dir) or references to environment variables that nats-server resolves at
start (``$JETGRID_NATS_PASSWORD_GATEWAY``), so a committed config holds no secret.

The committed ``nats.conf`` is ``render_nats_config(COMMITTED)``; a test keeps the two equal.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from jetgrid.coordinator.roles import (
    SERVICE_USERS,
    Deployment,
    Permissions,
    User,
    inbox_prefix,
    password_env,
    permissions,
    service_user,
    worker_user,
)
from jetgrid.events import ConfigError

ACCOUNT = "JETGRID"


@dataclass(frozen=True, slots=True)
class Secret:
    """A password: a literal value, or the name of an environment variable nats-server reads."""

    value: str | None = None
    env: str | None = None

    def __post_init__(self) -> None:
        if (self.value is None) == (self.env is None):
            raise ConfigError("A secret is either a literal value or an environment variable.")

    def render(self) -> str:
        return f"${self.env}" if self.env else _quote(self.value or "")


@dataclass(frozen=True, slots=True)
class ServerTls:
    """Server-side TLS: certificate and key; with `ca` and `verify`, clients must present certs."""

    cert: Path
    key: Path
    ca: Path | None = None
    verify: bool = False


@dataclass(frozen=True, slots=True)
class NatsConfig:
    """Everything the rendered config depends on. `users=None` renders a server without auth."""

    deployment: Deployment = field(default_factory=Deployment)
    users: tuple[tuple[User, Secret], ...] | None = ()
    server_name: str = "jetgrid"
    listen: str = "127.0.0.1:4222"
    max_memory_store: str = "256MB"
    max_file_store: str = "20GB"
    tls: ServerTls | None = None
    header: str = ""


def env_users(workers: tuple[str, ...] = ()) -> tuple[tuple[User, Secret], ...]:
    """The service users plus one user per worker id, each with an environment-variable secret."""
    users = [service_user(r) for r in SERVICE_USERS] + [worker_user(w) for w in workers]
    return tuple((u, Secret(env=password_env(u.name))) for u in users)


def _quote(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid NATS config string


def _list(items: tuple[str, ...], indent: str) -> str:
    inner = "".join(f"\n{indent}  {_quote(s)}" for s in items)
    return f"[{inner}\n{indent}]"


def _permissions(perms: Permissions, indent: str) -> str:
    i2 = indent + "  "
    lines = [f"{indent}permissions: {{"]
    pub = f"{i2}publish: {{ allow: {_list(perms.publish, i2)}"
    if perms.publish_deny:
        pub += f", deny: {_list(perms.publish_deny, i2)}"
    lines.append(pub + " }")
    sub = f"{i2}subscribe: {{ allow: {_list(perms.subscribe, i2)}"
    if perms.subscribe_deny:
        sub += f", deny: {_list(perms.subscribe_deny, i2)}"
    lines.append(sub + " }")
    lines.append(f"{indent}}}")
    return "\n".join(lines)


def _user(user: User, secret: Secret, d: Deployment) -> str:
    head = (
        f"      {{ # role {user.role}; inbox prefix {inbox_prefix(user.name)}\n"
        f"        user: {_quote(user.name)}, password: {secret.render()}"
    )
    perms = permissions(user, d)
    if perms is None:
        return head + "\n        # no permissions block: unrestricted (provisioning)\n      }"
    return f"{head}\n{_permissions(perms, '        ')}\n      }}"


def render_nats_config(cfg: NatsConfig) -> str:
    """The nats-server configuration text for `cfg`."""
    d = cfg.deployment
    if cfg.users is not None:
        names = [u.name for u, _ in cfg.users]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"NATS users {dupes} appear more than once.")
        envs = [s.env for _, s in cfg.users if s.env]
        clash = sorted({e for e in envs if envs.count(e) > 1})
        if clash:
            raise ConfigError(
                f"Password variables {clash} are shared by several users (worker ids that "
                "differ only in case or in '-' versus '_'); rename a worker."
            )
    out = []
    if cfg.header:
        out += [f"# {line}".rstrip() for line in cfg.header.splitlines()] + [""]
    out += [
        f"server_name: {_quote(cfg.server_name)}",
        f"listen: {_quote(cfg.listen)}",
        "max_payload: 1MB",
        "# Large enough for one burst of a busy gateway; slow consumers are cut off.",
        "max_pending: 64MB",
        "",
        "jetstream {",
        "  # fsync every write before acknowledging it. The default (every 2 minutes) can lose",
        "  # acknowledged jobs on power loss; jobs are few and valuable, so we pay for safety.",
        "  sync_interval: always",
        f"  max_memory_store: {cfg.max_memory_store}",
        f"  max_file_store: {cfg.max_file_store}",
        "}",
    ]
    if cfg.tls is not None:
        t = cfg.tls
        out += [
            "",
            "tls {",
            f"  cert_file: {_quote(str(t.cert))}",
            f"  key_file: {_quote(str(t.key))}",
        ]
        if t.ca is not None:
            out.append(f"  ca_file: {_quote(str(t.ca))}")
        if t.verify:
            out.append("  verify: true")
        out += ["  timeout: 2", "}"]
    if cfg.users is None:
        out += ["", "# No accounts and no users: anyone who can reach the port may do anything."]
        return "\n".join(out) + "\n"
    out += [
        "",
        f"# One account for jetgrid: subjects under {_quote(d.subject_prefix)}, streams named like",
        f"# {_quote(d.stream_prefix + 'JOBS')}. Each user subscribes only under its own inbox",
        "# prefix, _INBOX_<user>, which jetgrid derives from the user name when it connects.",
        "accounts {",
        f"  {ACCOUNT} {{",
        "    jetstream: enabled",
        "    users: [",
        *(_user(u, s, d) for u, s in cfg.users),
        "    ]",
        "  }",
        "}",
    ]
    return "\n".join(out) + "\n"


COMMITTED = NatsConfig(
    users=env_users(("fast-1", "standard-1", "heavy-1")),
    header=(
        "jetgrid's NATS server configuration, rendered by `jetgrid nats-config --env-secrets\n"
        "--listen 127.0.0.1:4222 --worker fast-1 --worker standard-1 --worker heavy-1`\n"
        "(a test keeps it in step).\n"
        "\n"
        "It holds no secret: each password is an environment variable that nats-server reads at\n"
        "start (JETGRID_NATS_PASSWORD_<USER>); docker-compose.yml passes them in. `jetgrid up`\n"
        "does not use this file: it renders its own, with generated passwords and its own\n"
        "workers, into its data dir. Listen address, port and store dir are set on the command\n"
        "line (-a, -p, -sd; cluster flags in docker-compose.yml). Roles: coordinator/roles.py."
    ),
)

__all__ = ["ACCOUNT", "COMMITTED", "NatsConfig", "Secret", "ServerTls", "env_users",
           "render_nats_config"]  # fmt: skip
