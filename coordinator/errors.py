"""Errors of the coordination layer (all under events.errors.JetgridError).

JetgridError
└── NatsError                    NATS refused or could not do something; says what and where
    ├── NatsUnavailable          no server answered at the configured URL(s), or the connection
    │                            is closed
    ├── NatsTimeout              the server did not answer in time (and refused nothing)
    ├── PermissionDenied         the server refused a subject for this user
    ├── NotFound                 no such stream, consumer, message or bucket
    ├── PayloadTooLarge          a message exceeds the server's max_payload
    └── ProvisioningError        a stream or consumer cannot be made to match its spec

coordinator.bus translates every nats-py error into one of these; none of nats-py's escape it.
"""

from __future__ import annotations

from jetgrid.events.errors import JetgridError


class NatsError(JetgridError):
    """NATS could not do what was asked; the message names the subject, stream or URL."""


class NatsUnavailable(NatsError):
    """No NATS server answered, or the connection is closed."""


class NatsTimeout(NatsError, TimeoutError):
    """The server did not answer in time; also a TimeoutError."""


class PermissionDenied(NatsError):
    """The server refused an operation on a subject for the connected user."""


class NotFound(NatsError):
    """The stream, consumer, message or key-value bucket does not exist."""


class PayloadTooLarge(NatsError):
    """The message is larger than the server accepts (its max_payload)."""


class ProvisioningError(NatsError):
    """A stream or consumer differs from its spec in a way that cannot be updated in place."""
