"""The exception tree shared by every jetgrid layer.

    JetgridError                     root: catch this to catch anything jetgrid raises
    ├── InvalidEvent                 bytes that are not a valid event; `reason` names the field
    ├── InvalidSubject               a subject or token outside the grammar of events.subjects
    └── ConfigError                  a setting or config file that cannot be used as given

Layers above add their own branches (coordinator.errors, projections.errors, worker.errors,
gateway.errors), always under JetgridError. Driver errors (the NATS client's, the SQL
toolkit's) are translated at the adapter that meets them (coordinator.bus, projections.store)
and never escape it.
"""

from __future__ import annotations


class JetgridError(Exception):
    """Root of every error jetgrid raises on purpose."""


class InvalidEvent(JetgridError):
    """A message failed validation; `reason` is a sentence naming the field at fault."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidSubject(JetgridError, ValueError):
    """A subject, token, id or model name that the subject grammar cannot carry.

    Also a ValueError, so a pydantic validator that raises it yields a validation error.
    """


class ConfigError(JetgridError):
    """A setting that cannot be used as given; the message quotes the value."""
