"""Run the gateway app under uvicorn, inside a caller's event loop."""

from __future__ import annotations

import uvicorn

from coordinator.settings import Settings
from gateway.app import create_app


class EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its host process."""

    def capture_signals(self):  # type: ignore[no-untyped-def,override]
        import contextlib

        return contextlib.nullcontext()


def make_server(settings: Settings) -> EmbeddedServer:
    config = uvicorn.Config(
        create_app(settings),
        host=settings.gateway_host,
        port=settings.gateway_port,
        log_level="warning" if settings.log_level != "debug" else "info",
        access_log=settings.log_level == "debug",
        lifespan="on",
    )
    return EmbeddedServer(config)
