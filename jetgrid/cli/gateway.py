"""`jetgrid gateway`: the HTTP gateway alone, against a NATS server whose streams exist."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import click

from jetgrid.cli.shared import (
    nats_options,
    run_async,
    settings_from,
    settle_heap,
    setup_logging,
)


@click.command()
@nats_options
@click.option(
    "--port", "gateway_port", type=int, help="HTTP port. [env JETGRID_GATEWAY_PORT; default 8080]"
)
@click.option(
    "--host", "gateway_host", help="Listen address. [env JETGRID_GATEWAY_HOST; default 127.0.0.1]"
)
@run_async
async def gateway(**flags: Any) -> None:
    """Run the HTTP gateway against a NATS server (streams must exist: see `provision`)."""
    from jetgrid.coordinator.errors import NotFound
    from jetgrid.embedded import check_ports
    from jetgrid.events import ConfigError
    from jetgrid.gateway.app import create_app
    from jetgrid.gateway.server import make_server

    settings = settings_from(**flags)
    setup_logging(settings)
    check_ports(settings, start_nats=False, gateway_flag="--port")
    app = create_app(settings)
    try:  # here, not in uvicorn's lifespan, so that a failure is one line, not a traceback
        await app.state.gateway.start()
    except NotFound as exc:
        raise ConfigError(
            f"{str(exc).rstrip('.')}; create jetgrid's streams first with `jetgrid provision` "
            "(the same NATS server and prefixes)."
        ) from exc
    server = make_server(settings, app)
    server.config.load()  # uvicorn's protocol modules and the wrapped app, before the freeze
    settle_heap()
    loop = asyncio.get_running_loop()

    def _stop() -> None:
        server.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, _stop)
    click.echo(f"gateway on {settings.gateway_url} (NATS {settings.nats_url})", err=True)
    await server.serve()
