"""`jetgrid up`: a supervised nats-server plus a gateway and workers, in one foreground process.

The nats-server (each node of a --cluster) is started again whenever it ends, with back-off
(`natsserver.keep_running`); clients reconnect on their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from jetgrid import credentials
from jetgrid.coordinator.aio import ready_or_raise
from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.provision import provision_deployment, wait_for_jetstream
from jetgrid.coordinator.settings import Settings
from jetgrid.events import ConfigError
from jetgrid.gateway.auth import access_line
from jetgrid.gateway.server import make_server, wait_started
from jetgrid.natsserver import NatsCluster, NatsServer, keep_running, port_free
from jetgrid.projections.runner import open_projector
from jetgrid.webhooks import serve_webhooks
from jetgrid.worker.agent import Worker, WorkerOptions, default_worker_id
from jetgrid.worker.backends import EchoBackend
from jetgrid.worker.deadletter import watch_dead_letters

log = logging.getLogger("jetgrid.up")


@dataclass
class UpOptions:
    pool: str = "standard"
    models: tuple[str, ...] = ("echo",)
    concurrency: int = 4
    start_nats: bool = True
    # Run the embedded nats-server with users per role (passwords generated into the data dir).
    auth: bool = True
    # JETGRID_NATS_PASSWORD_<USER> variables that override generated passwords.
    env: Mapping[str, str] = field(default_factory=dict)
    cluster: int = 1  # >1: a JetStream cluster of this many nodes on loopback


def cluster_ports(settings: Settings, size: int) -> list[int]:
    """Client ports of a `size`-node cluster: --nats-port and the ones after it."""
    base = settings.nats_port
    return [base + i if base else 0 for i in range(size)]


def check_ports(
    settings: Settings, start_nats: bool, cluster: int = 1, gateway_flag: str = "--gateway-port"
) -> None:
    """Fail early, in plain words, if a port we need is taken (`gateway_flag` names the option
    that sets the gateway's)."""
    wanted = [("gateway", settings.gateway_host, settings.gateway_port, gateway_flag)]
    if start_nats:
        for port in cluster_ports(settings, cluster):
            wanted.append(("NATS", settings.nats_host, port, "--nats-port"))
    for what, host, port, flag in wanted:
        if not port_free(host, port):
            raise ConfigError(
                f"Port {port} on {host} is already in use, so the {what} cannot listen there. "
                f"Stop whatever holds it (another `jetgrid up`?) or choose another with {flag}."
                + (
                    " To use a NATS server that is already running, pass --nats-url."
                    if what == "NATS"
                    else ""
                )
            )


async def run_up(
    settings: Settings,
    options: UpOptions,
    echo: Callable[[str], None] = print,
    on_ready: Callable[[], None] = lambda: None,
) -> None:
    """Start everything, print where it is, call `on_ready`, run until SIGINT/SIGTERM, stop in
    order."""
    check_ports(settings, options.start_nats, options.cluster)
    base = default_worker_id()
    worker_ids = [f"{base}-{i + 1}" for i in range(settings.workers)]
    server: NatsServer | NatsCluster | None = None
    creds: credentials.Credentials | None = None
    if options.start_nats:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        conf = settings.nats_conf
        if options.auth and conf is None:
            serves = tuple((options.pool, m) for m in options.models)
            creds = credentials.ensure(
                settings.data_dir, {w: serves for w in worker_ids}, options.env
            )
            conf = settings.data_dir / credentials.CONF_NAME
            credentials.write_conf(conf, credentials.render(creds, settings))
        if options.cluster > 1:
            server = NatsCluster(
                settings.data_dir / "nats-cluster",
                size=options.cluster,
                conf=conf,
                host=settings.nats_host,
                ports=cluster_ports(settings, options.cluster),
                log_dir=settings.data_dir,
            )
        else:
            server = NatsServer(
                settings.data_dir / "nats",
                conf=conf,
                host=settings.nats_host,
                port=settings.nats_port,
                log_file=settings.data_dir / "nats-server.log",
                extra_args=("-P", str(settings.data_dir / credentials.PID_NAME)),
            )
        await asyncio.to_thread(server.start)
        settings = settings.replace(nats_url=server.url)
    nodes = server.nodes if isinstance(server, NatsCluster) else [server] if server else []
    keepers = [asyncio.create_task(keep_running(n), name=f"nats-{n.port}") for n in nodes]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        bus = await Bus.connect(_as(settings, creds, "admin"), name="jetgrid-up-provision")
        try:
            await wait_for_jetstream(bus.js)
            report = await provision_deployment(bus.js, settings)
        finally:
            await bus.close()
        for line in report.lines():
            log.info(line)
        projector = await open_projector(_as(settings, creds, "projector"))

        http = make_server(_as(settings, creds, "gateway"))
        gateway_task = asyncio.create_task(http.serve(), name="gateway")
        workers = [
            Worker(
                creds.worker_settings(settings, wid) if creds else settings,
                WorkerOptions(
                    pool=options.pool,
                    models=options.models,
                    worker_id=wid,
                    concurrency=options.concurrency,
                ),
                EchoBackend(),
            )
            for wid in worker_ids
        ]
        worker_tasks = [asyncio.create_task(w.run(), name=w.id) for w in workers]
        if not workers:  # workers watch dead letters; without any, run a watcher of our own
            worker_tasks.append(
                asyncio.create_task(
                    watch_dead_letters(_as(settings, creds, "projector"), stop),
                    name="deadletter",
                )
            )

        hooks_stop, hooks_ready = asyncio.Event(), asyncio.Event()
        hooks_task = asyncio.create_task(
            serve_webhooks(_as(settings, creds, "gateway"), hooks_stop, hooks_ready),
            name="webhooks",
        )

        def _crashed(task: asyncio.Task[None]) -> None:
            if not task.cancelled() and task.exception() is not None:
                log.error("%s stopped with an error: %r", task.get_name(), task.exception())
                echo(f"error: {task.get_name()} stopped: {task.exception()!r}; shutting down")
                stop.set()

        for task in [*worker_tasks, gateway_task, hooks_task]:
            task.add_done_callback(_crashed)
        await wait_started(http, gateway_task)  # raises what stopped it, if it did
        # "up" only once every part is connected: a server restart now is a reconnect, not a
        # failed first connect, and the workers are registered before anyone submits.
        for w, task in zip(workers, worker_tasks, strict=False):  # (+ a watcher if no workers)
            await ready_or_raise(w.ready, task)
        await ready_or_raise(hooks_ready, hooks_task)
        echo(f"jetgrid is up.\n  gateway  {settings.gateway_url}\n  NATS     {settings.nats_url}")
        if options.cluster > 1:
            echo(
                f"  cluster  {options.cluster} JetStream nodes, streams R{settings.stream_replicas}"
            )
        if server is not None:
            echo(f"  data     {settings.data_dir.resolve()}")
        echo(f"  reads    {settings.database_url} (projector; tiers in {settings.tiers_bucket})")
        if creds is not None:
            echo(
                f"  auth     on: a NATS user per role, passwords in {creds.path.resolve()}\n"
                f'           (for the CLI: eval "$(jetgrid credentials client)")'
            )
        echo(f"  access   {access_line(settings)}")
        echo(
            f"  workers  {len(workers)} echo worker(s) in pool {options.pool!r} serving "
            f"{', '.join(options.models)}\n"
            f"Try: curl -s -XPOST '{settings.gateway_url}/v1/jobs?wait=10' "
            f'-d \'{{"model": "{options.models[0]}", "prompt": "hello"}}\'\n'
            "Ctrl-C stops everything; the data stays for the next start."
        )
        on_ready()
        await stop.wait()
        echo("stopping...")
        for w in workers:
            w.stop()
        await asyncio.gather(*worker_tasks, return_exceptions=True)
        hooks_stop.set()
        await asyncio.gather(hooks_task, return_exceptions=True)
        http.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await gateway_task
        await projector.close()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        for keeper in keepers:  # before stopping the servers, or they are started again
            keeper.cancel()
        await asyncio.gather(*keepers, return_exceptions=True)
        if server is not None:
            await asyncio.to_thread(server.stop)
    echo("stopped.")


def _as(settings: Settings, creds: credentials.Credentials | None, user: str) -> Settings:
    return creds.settings_for(settings, user) if creds else settings


__all__ = ["UpOptions", "check_ports", "run_up"]
