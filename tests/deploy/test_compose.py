"""docker-compose.yml, checked without Docker: its services, the jetgrid commands and options it
runs, the files it mounts, its ports and start order; and its three NATS command lines run for
real on loopback with the committed nats.conf, forming a JetStream cluster that takes R3 streams.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from jetgrid.cli import main
from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.natsconf import COMMITTED
from jetgrid.coordinator.provision import provision_streams
from jetgrid.coordinator.roles import password_env
from jetgrid.coordinator.settings import Settings
from jetgrid.events import stream_specs
from jetgrid.natsserver import NatsServer, free_port

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
NATS_NODES = ("nats-1", "nats-2", "nats-3")
COMPONENTS = ("gateway-1", "gateway-2", "projector", "worker-fast", "worker-standard",
              "worker-heavy")  # fmt: skip
UPCOMING = {"projector": "`jetgrid projector` is built by issue 3 (the projector process)"}


def test_the_topology_is_all_there() -> None:
    assert set(SERVICES) == {*NATS_NODES, "provision", *COMPONENTS, "ollama"}
    pools = {s["command"][s["command"].index("--pool") + 1] for n, s in SERVICES.items()
             if n.startswith("worker-")}  # fmt: skip
    assert pools == {"fast", "standard", "heavy"}
    assert SERVICES["ollama"]["profiles"] == ["ollama"]
    gpu = SERVICES["ollama"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and gpu["capabilities"] == ["gpu"]
    assert (REPO / "Dockerfile").is_file()


JETGRID_SERVICES = [n for n, s in SERVICES.items() if s.get("command", [""])[0] == "jetgrid"]


@pytest.mark.parametrize("name", JETGRID_SERVICES)
def test_every_jetgrid_command_and_option_exists(name: str) -> None:
    args = SERVICES[name]["command"][1:]
    if args[0] not in main.commands and args[0] in UPCOMING:
        pytest.skip(UPCOMING[args[0]])
    assert args[0] in main.commands, f"{name} runs `jetgrid {args[0]}`, which does not exist"
    # --help after the real arguments: click rejects unknown options before printing help.
    result = CliRunner().invoke(main, [*args, "--help"])
    assert result.exit_code == 0, f"{name}: {result.output}"


def test_mounted_files_exist_and_host_ports_are_unique() -> None:
    ports = []
    for name, svc in SERVICES.items():
        for vol in svc.get("volumes", []):
            src = vol.split(":", 1)[0]
            if src.startswith("."):
                assert (REPO / src).is_file(), f"{name} mounts {src}, which is not in the repo"
        ports += [p.split(":")[0] for p in svc.get("ports", [])]
    assert len(ports) == len(set(ports)), ports


def test_start_order() -> None:
    for node in NATS_NODES:
        assert "healthz" in " ".join(SERVICES[node]["healthcheck"]["test"])
    provision = SERVICES["provision"]
    assert provision["command"] == ["jetgrid", "provision"]
    assert provision["depends_on"] == {n: {"condition": "service_healthy"} for n in NATS_NODES}
    assert provision["environment"]["JETGRID_STREAM_REPLICAS"] == "3"
    for name in COMPONENTS:
        deps = SERVICES[name]["depends_on"]
        assert deps == {"provision": {"condition": "service_completed_successfully"}}, name


def test_every_component_connects_as_its_own_user() -> None:
    conf = (REPO / "nats.conf").read_text()
    users = set(re.findall(r'user: "([^"]+)"', conf))
    expected = {"provision": "admin", "gateway-1": "gateway", "gateway-2": "gateway",
                "projector": "projector", "worker-fast": "worker-fast-1",
                "worker-standard": "worker-standard-1",
                "worker-heavy": "worker-heavy-1"}  # fmt: skip
    for name, user in expected.items():
        env = SERVICES[name]["environment"]
        assert env["JETGRID_NATS_USER"] == user and user in users
        assert password_env(user) in env["JETGRID_NATS_PASSWORD"]
    for node in NATS_NODES:  # every password nats.conf refers to reaches every node
        assert set(SERVICES[node]["environment"]) == set(re.findall(r"\$(JETGRID_\w+)", conf))


# -- the NATS command lines of the compose file, run on loopback ---------------------------------
def _node_args(node: str, ports: dict[str, dict[str, int]]) -> list[str]:
    """The node's compose command with container addresses mapped to loopback ports."""
    args = SERVICES[node]["command"][1:]
    routes = ",".join(f"nats://127.0.0.1:{ports[n]['route']}" for n in NATS_NODES)
    mapping = {"-c": None, "-a": None, "-p": None, "-sd": None,  # NatsServer sets these
               "-m": str(ports[node]["http"]), "--cluster": f"nats://127.0.0.1:{ports[node]['route']}",
               "--routes": routes}  # fmt: skip
    out: list[str] = []
    it = iter(args)
    for flag in it:
        value = next(it)
        if flag in mapping:
            if mapping[flag] is not None:
                out += [flag, mapping[flag]]  # type: ignore[list-item]
        else:
            out += [flag, value]
    return out


@pytest.fixture
def compose_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    passwords = {u.name: "jg" + secrets.token_urlsafe(12) for u, _ in COMMITTED.users or ()}
    for user, pw in passwords.items():  # nats-server reads them from its environment
        monkeypatch.setenv(password_env(user), pw)
    ports = {n: {"route": free_port(), "http": free_port()} for n in NATS_NODES}
    servers = [NatsServer(tmp_path / n, conf=REPO / "nats.conf", port=0,
                          extra_args=tuple(_node_args(n, ports)),
                          log_file=tmp_path / f"{n}.log") for n in NATS_NODES]  # fmt: skip
    try:
        for s in servers:
            s.start()
        yield {"url": ",".join(s.url for s in servers), "admin": passwords["admin"]}
    finally:
        for s in servers:
            s.stop()


@pytest.mark.integration
@pytest.mark.slow
async def test_the_compose_nats_nodes_form_a_cluster_that_takes_r3_streams(
    compose_cluster: dict[str, str],
) -> None:
    settings = Settings(nats_url=compose_cluster["url"], nats_user="admin",
                        nats_password=compose_cluster["admin"], stream_replicas=3)  # fmt: skip
    nc = (await Bus.connect(settings, name="test-provision")).nc
    try:
        js = nc.jetstream(timeout=5)
        specs = stream_specs(settings.subjects, settings.streams, replicas=3)
        info = None
        # The JetStream meta leader is elected shortly after the routes form, and may answer
        # 503 for a moment after a stream is created: wait until the stream reads back.
        for _ in range(60):
            try:
                await provision_streams(js, specs)
                info = await js.stream_info(settings.streams.jobs)
                break
            except Exception:
                await asyncio.sleep(0.5)
        assert info is not None, "the 3-node cluster never took the R3 streams"
        assert info.config.num_replicas == 3 and len(info.cluster.replicas or []) == 2
        assert info.cluster.name == "jetgrid"
    finally:
        await nc.close()
