"""The role tables and the rendered config, as plain data (no server)."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from jetgrid.cli import main
from jetgrid.coordinator.natsconf import (
    COMMITTED,
    NatsConfig,
    Secret,
    env_users,
    render_nats_config,
)
from jetgrid.coordinator.roles import (
    ROLES,
    Deployment,
    User,
    inbox_prefix,
    password_env,
    permissions,
    service_user,
    worker_user,
)
from jetgrid.coordinator.settings import Settings
from jetgrid.events import ConfigError

REPO = Path(__file__).resolve().parents[2]
D = Deployment("acme.grid", "A_")


def test_the_committed_config_is_the_rendered_default() -> None:
    assert (REPO / "nats.conf").read_text() == render_nats_config(COMMITTED)
    assert 'password: "' not in (REPO / "nats.conf").read_text()  # no literal secret


def test_nats_config_command_renders_the_same_users_and_permissions() -> None:
    args = ["nats-config", "--env-secrets", "--listen", "127.0.0.1:4222",
            "--worker", "fast-1", "--worker", "standard-1", "--worker", "heavy-1"]  # fmt: skip
    out = CliRunner().invoke(main, args).output
    body = [ln for ln in out.splitlines() if not ln.startswith("#")]
    committed = (REPO / "nats.conf").read_text().splitlines()
    assert body == [ln for ln in committed if not ln.startswith("#")]


@pytest.mark.parametrize(
    ("user", "allowed", "refused"),
    [
        (service_user("gateway"), ["acme.grid.jobs.*.*", "acme.grid.job.*.cancel_requested",
                                   "acme.grid.job.*.expired"],
         ["acme.grid.job.*.completed", "acme.grid.worker.*.heartbeat",
          "$JS.API.STREAM.DELETE.A_JOBS"]),
        (service_user("client"), ["acme.grid.jobs.*.*"],
         ["acme.grid.job.*.completed", "acme.grid.job.*.dead", "acme.grid.job.*.expired",
          "acme.grid.worker.w1.heartbeat"]),
        (service_user("projector"), ["$KV.A_TIERS.>", "acme.grid.job.*.dead"],
         ["acme.grid.jobs.*.*", "acme.grid.job.*.completed"]),
        (worker_user("w1"), ["acme.grid.worker.w1.*", "acme.grid.job.*.completed.w1",
                             "acme.grid.job.*.dead.w1", "acme.grid.job.*.expired.w1",
                             "$JS.ACK.A_JOBS.*.>"],
         ["acme.grid.worker.w2.*", "acme.grid.jobs.*.*", "acme.grid.jobs.*.*.*",
          "acme.grid.job.*.cancel_requested", "acme.grid.job.*.completed",
          "acme.grid.job.*.completed.w2", "acme.grid.job.*.dead", "acme.grid.job.*.dead.w2",
          "acme.grid.job.*.expired", "acme.grid.job.*.expired.w2"]),
        (worker_user("w1", (("fast", "llama3.2:1b"),)),
         ["$JS.ACK.A_JOBS.pool-fast-llama3_2E2_3A1b.>"], ["$JS.ACK.A_JOBS.*.>"]),
    ],
)  # fmt: skip
def test_role_tables(user: User, allowed: list[str], refused: list[str]) -> None:
    perms = permissions(user, D)
    assert perms is not None
    for subject in allowed:
        assert subject in perms.publish
    for subject in refused:
        assert subject not in perms.publish
    assert perms.subscribe[0] == f"{inbox_prefix(user.name)}.>"
    assert not any(s.startswith("_INBOX") and s != perms.subscribe[0] for s in perms.subscribe)


def test_only_the_gateway_submits_python_by_default() -> None:
    def denies(role: str, d: Deployment) -> bool:
        perms = permissions(service_user(role), d)
        return perms is not None and "acme.grid.jobs.*.python" in perms.publish_deny

    assert denies("client", D) and not denies("gateway", D)
    assert not denies("client", Deployment("acme.grid", "A_", python_submitters=("client",)))


def test_admin_is_unrestricted_and_every_role_is_known() -> None:
    assert permissions(service_user("admin"), D) is None
    assert set(ROLES) == {"admin", "gateway", "projector", "client", "worker"}
    with pytest.raises(ConfigError, match="Role 'root'"):
        User("root", "root")


def test_clashing_password_variables_are_refused() -> None:
    users = env_users(("gpu-1", "gpu_1"))
    with pytest.raises(ConfigError, match="JETGRID_NATS_PASSWORD_WORKER_GPU_1"):
        render_nats_config(NatsConfig(users=users))
    assert password_env("worker-gpu-1") == "JETGRID_NATS_PASSWORD_WORKER_GPU_1"


def test_literal_passwords_are_quoted_and_open_config_has_no_accounts() -> None:
    text = render_nats_config(NatsConfig(users=((service_user("admin"), Secret(value='a"b')),)))
    assert 'password: "a\\"b"' in text
    assert "accounts {" not in render_nats_config(NatsConfig(users=None))


@pytest.mark.parametrize(
    ("user", "explicit", "expected"),
    [(None, None, "_INBOX"), ("gateway", None, "_INBOX_gateway"), ("gateway", "_X", "_X")],
)
def test_the_inbox_prefix_follows_the_user(
    user: str | None, explicit: str | None, expected: str
) -> None:
    s = Settings(nats_user=user, nats_inbox_prefix=explicit)
    assert s.inbox_prefix == expected


def test_worker_credentials_add_writes_a_private_file(tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["worker-credentials", "add", "gpu-7", "--data-dir", str(tmp_path)]
    first = runner.invoke(main, [*args, "--pool", "heavy", "--model", "llama3:70b"])
    assert first.exit_code == 0, first.output
    lines = dict(ln.split("=", 1) for ln in first.output.splitlines() if "=" in ln)
    assert lines["JETGRID_NATS_USER"] == "worker-gpu-7"
    creds = tmp_path / "credentials.json"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    again = runner.invoke(main, [*args, "--pool", "heavy", "--model", "llama3:70b"])
    assert again.output == first.output  # idempotent: the same password
    listed = runner.invoke(main, ["worker-credentials", "list", "--data-dir", str(tmp_path)])
    assert re.search(r"gpu-7\tworker-gpu-7\theavy/llama3:70b", listed.output)
    shown = runner.invoke(main, ["credentials", "client", "--data-dir", str(tmp_path)])
    assert "export JETGRID_NATS_USER=client" in shown.output
    bad = runner.invoke(main, ["worker-credentials", "add", "a.b", "--data-dir", str(tmp_path)])
    assert bad.exit_code == 1 and "worker id 'a.b'" in bad.output
