"""Errors a backend raises to say how a job failed.

JetgridError
└── BackendError
    ├── TransientError     worth retrying: the backend is unreachable, overloaded, out of memory
    └── PermanentError     retrying cannot help: bad input, unknown model
"""

from __future__ import annotations

from jetgrid.events import JetgridError


class BackendError(JetgridError):
    """A job could not be run; `error_type` is a short machine-readable label."""

    error_type = "backend_error"

    def __init__(self, message: str, *, error_type: str | None = None) -> None:
        super().__init__(message)
        if error_type:
            self.error_type = error_type


class TransientError(BackendError):
    error_type = "transient"


class PermanentError(BackendError):
    error_type = "permanent"
