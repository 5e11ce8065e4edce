"""Errors of the read models (all under events.errors.JetgridError).

JetgridError
├── ReadModelError               the read-model database failed; the message names its URL
│   └── ReadModelUnavailable     no database answered at the URL, or it holds no read models
│                                yet (no projector has created its tables)
├── ArchiveError                 an archive directory is missing, foreign, damaged or has a gap
└── SnapshotError                a read-model snapshot is foreign, damaged or does not match

projections.store.Store translates every SQLAlchemy and database-driver error into one of these,
so no SQLAlchemy error leaves the projections layer. A URL that cannot be used at all (unknown
dialect, driver not installed) is a ConfigError.
"""

from __future__ import annotations

from jetgrid.events.errors import JetgridError

__all__ = ["ArchiveError", "ReadModelError", "ReadModelUnavailable", "SnapshotError"]


class ReadModelError(JetgridError):
    """The read-model database failed; the message says what was being done and where."""


class ReadModelUnavailable(ReadModelError):
    """The read-model database cannot be reached or has no read-model tables yet."""


class ArchiveError(JetgridError):
    """An archive directory cannot be used; the message names the file and the fix."""


class SnapshotError(JetgridError):
    """A read-model snapshot cannot be used; the message says why (the projector replays)."""
