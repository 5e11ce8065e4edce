"""Errors of the coordination layer (all under events.errors.JetgridError).

JetgridError
└── NatsError                    NATS refused or could not do something; says what and where
    ├── NatsUnavailable          no server answered at the configured URL(s)
    ├── PermissionDenied         the server refused a subject for this user
    └── ProvisioningError        a stream or consumer cannot be made to match its spec
"""

from __future__ import annotations

from jetgrid.events.errors import JetgridError


class NatsError(JetgridError):
    """NATS could not do what was asked; the message names the subject, stream or URL."""


class NatsUnavailable(NatsError):
    """No NATS server answered."""


class PermissionDenied(NatsError):
    """The server refused an operation on a subject for the connected user."""


class ProvisioningError(NatsError):
    """A stream or consumer differs from its spec in a way that cannot be updated in place."""
