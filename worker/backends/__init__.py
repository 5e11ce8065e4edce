"""Backends a worker can run jobs on."""

from jetgrid.worker.backends.base import Backend, Result, RunContext
from jetgrid.worker.backends.echo import EchoBackend, expected_output

__all__ = ["Backend", "EchoBackend", "Result", "RunContext", "expected_output"]
