"""`jetgrid up`: NATS, a projector, the gateway and echo workers on this machine, in the foreground."""

from __future__ import annotations

import os
from typing import Any

import click

from jetgrid.cli.shared import (
    data_dir_option,
    models_option,
    nats_options,
    nats_url_given,
    pool_option,
    run_async,
    settings_from,
    settle_heap,
    setup_logging,
)


@click.command()
@nats_options
@click.option(
    "--gateway-port",
    type=int,
    help="HTTP port of the gateway. [env JETGRID_GATEWAY_PORT; default 8080]",
)
@click.option("--gateway-host", help="Address the gateway listens on. [default 127.0.0.1]")
@click.option(
    "--nats-port",
    type=int,
    help="Client port of the embedded NATS server. [env JETGRID_NATS_PORT; default 4222]",
)
@data_dir_option("Where NATS keeps its store and logs; kept between runs.")
@click.option(
    "--workers", type=int, help="Number of echo workers to run. [env JETGRID_WORKERS; default 2]"
)
@pool_option("Pool the workers serve.", default="standard")
@models_option("Model the workers serve (repeatable). [default echo]")
@click.option("--concurrency", default=4, show_default=True, help="Jobs each worker runs at once.")
@click.option(
    "--no-auth",
    is_flag=True,
    help="Run the embedded NATS without users (default: a user per role, passwords generated into --data-dir).",
)
@click.option(
    "--cluster",
    type=click.IntRange(1, 7),
    default=1,
    show_default=True,
    help="Run a JetStream cluster of this many nats-server nodes on loopback (client ports "
    "--nats-port and the next ones); streams get that many replicas unless "
    "JETGRID_STREAM_REPLICAS says otherwise.",
)
@run_async
async def up(
    pool: str,
    models: tuple[str, ...],
    concurrency: int,
    no_auth: bool,
    cluster: int,
    **flags: Any,
) -> None:
    """Run jetgrid on this machine: NATS, a gateway and echo workers, in the foreground.

    Starts a supervised nats-server (JetStream on, store under --data-dir, a NATS user per role
    with passwords generated into --data-dir/credentials.json), or with --cluster N a JetStream
    cluster of N nodes on loopback, unless --nats-url points at one you already run; creates the
    streams; starts a projector, the gateway and the workers; prints their URLs. Ctrl-C (or
    SIGTERM) stops everything cleanly and keeps the data, so the next `jetgrid up` resumes
    where this one stopped.
    """
    from jetgrid.embedded import UpOptions, run_up

    start_nats = not nats_url_given(flags)
    if cluster > 1 and "JETGRID_STREAM_REPLICAS" not in os.environ:
        flags["stream_replicas"] = min(cluster, 5)
    settings = settings_from(**flags)
    setup_logging(settings)
    await run_up(
        settings,
        UpOptions(
            pool=pool,
            models=models or ("echo",),
            concurrency=concurrency,
            start_nats=start_nats,
            auth=not no_auth,
            env=os.environ,
            cluster=cluster,
        ),
        echo=click.echo,
        on_ready=settle_heap,
    )
