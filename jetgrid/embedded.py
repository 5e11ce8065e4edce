"""`jetgrid up`: a supervised nats-server plus a gateway and workers, in one foreground process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass

from coordinator.connect import connect
from coordinator.provision import provision_streams, wait_for_jetstream
from coordinator.settings import Settings
from events import ConfigError, dead_letter_spec, stream_specs
from gateway.server import make_server
from jetgrid.natsserver import NatsCluster, NatsServer, port_free
from worker.agent import Worker, WorkerOptions, default_worker_id
from worker.backends import EchoBackend
from worker.deadletter import watch_dead_letters

log = logging.getLogger("jetgrid.up")


@dataclass
class UpOptions:
    pool: str = "standard"
    models: tuple[str, ...] = ("echo",)
    concurrency: int = 4
    start_nats: bool = True
    cluster: int = 1  # >1: a JetStream cluster of this many nodes on loopback


def cluster_ports(settings: Settings, size: int) -> list[int]:
    """Client ports of a `size`-node cluster: --nats-port and the ones after it."""
    base = settings.nats_port
    return [base + i if base else 0 for i in range(size)]


def check_ports(settings: Settings, start_nats: bool, cluster: int = 1) -> None:
    """Fail early, in plain words, if a port we need is taken."""
    wanted = [("gateway", settings.gateway_host, settings.gateway_port, "--gateway-port")]
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
    settings: Settings, options: UpOptions, echo: Callable[[str], None] = print
) -> None:
    """Start everything, print where it is, run until SIGINT/SIGTERM, stop in order."""
    check_ports(settings, options.start_nats, options.cluster)
    server: NatsServer | NatsCluster | None = None
    if options.start_nats and options.cluster > 1:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        server = NatsCluster(
            settings.data_dir / "nats-cluster",
            size=options.cluster,
            conf=settings.nats_conf,
            host=settings.nats_host,
            ports=cluster_ports(settings, options.cluster),
            log_dir=settings.data_dir,
        )
        await asyncio.to_thread(server.start)
        settings = settings.replace(nats_url=server.url)
    elif options.start_nats:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        server = NatsServer(
            settings.data_dir / "nats",
            conf=settings.nats_conf,
            host=settings.nats_host,
            port=settings.nats_port,
            log_file=settings.data_dir / "nats-server.log",
        )
        await asyncio.to_thread(server.start)
        settings = settings.replace(nats_url=server.url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        nc = await connect(settings, name="jetgrid-up-provision")
        try:
            await wait_for_jetstream(nc.jetstream())
            report = await provision_streams(
                nc.jetstream(),
                [
                    *stream_specs(
                        settings.subjects,
                        settings.streams,
                        replicas=settings.stream_replicas,
                        duplicate_window_s=settings.duplicate_window_s,
                    ),
                    dead_letter_spec(
                        settings.streams,
                        replicas=settings.stream_replicas,
                        duplicate_window_s=settings.duplicate_window_s,
                    ),
                ],
            )
        finally:
            await nc.close()
        for line in report.lines():
            log.info(line)

        http = make_server(settings)
        gateway_task = asyncio.create_task(http.serve(), name="gateway")
        base = default_worker_id()
        workers = [
            Worker(
                settings,
                WorkerOptions(
                    pool=options.pool,
                    models=options.models,
                    worker_id=f"{base}-{i + 1}",
                    concurrency=options.concurrency,
                ),
                EchoBackend(),
            )
            for i in range(settings.workers)
        ]
        worker_tasks = [asyncio.create_task(w.run(), name=w.id) for w in workers]
        if not workers:  # workers watch dead letters; without any, run a watcher of our own
            worker_tasks.append(
                asyncio.create_task(watch_dead_letters(settings, stop), name="deadletter")
            )

        def _crashed(task: asyncio.Task[None]) -> None:
            if not task.cancelled() and task.exception() is not None:
                log.error("%s stopped with an error: %r", task.get_name(), task.exception())
                echo(f"error: {task.get_name()} stopped: {task.exception()!r}; shutting down")
                stop.set()

        for task in [*worker_tasks, gateway_task]:
            task.add_done_callback(_crashed)
        # uvicorn exposes `started` as a flag, not an event, so poll it briefly.
        while not http.started and not gateway_task.done():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        if gateway_task.done():
            gateway_task.result()  # raises what stopped it
        echo(f"jetgrid is up.\n  gateway  {settings.gateway_url}\n  NATS     {settings.nats_url}")
        if options.cluster > 1:
            echo(
                f"  cluster  {options.cluster} JetStream nodes, streams R{settings.stream_replicas}"
            )
        if server is not None:
            echo(f"  data     {settings.data_dir.resolve()}")
        echo(
            f"  workers  {len(workers)} echo worker(s) in pool {options.pool!r} serving "
            f"{', '.join(options.models)}\n"
            f"Try: curl -s -XPOST '{settings.gateway_url}/v1/jobs?wait=10' "
            f'-d \'{{"model": "{options.models[0]}", "prompt": "hello"}}\'\n'
            "Ctrl-C stops everything; the data stays for the next start."
        )
        await stop.wait()
        echo("stopping...")
        for w in workers:
            w.stop()
        await asyncio.gather(*worker_tasks, return_exceptions=True)
        http.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await gateway_task
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if server is not None:
            await asyncio.to_thread(server.stop)
    echo("stopped.")


__all__ = ["UpOptions", "check_ports", "run_up"]
