"""Backends a worker can run jobs on."""

from worker.backends.base import Backend, Result, RunContext
from worker.backends.echo import EchoBackend, expected_output

__all__ = ["Backend", "EchoBackend", "Result", "RunContext", "expected_output"]
