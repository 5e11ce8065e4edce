"""A throwaway PostgreSQL server: initdb into a temp dir, pg_ctl on 127.0.0.1, stop and forget.

For running the read models on PostgreSQL in tests and on a dev machine, the way
`jetgrid.natsserver` runs nats-server. Uses the binaries of an installed PostgreSQL (Debian's
`postgresql` package puts them in /usr/lib/postgresql/<version>/bin). PostgreSQL refuses to
run as root, so as root the server runs as the `postgres` system user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
from pathlib import Path

from jetgrid.events import ConfigError, JetgridError

SUPERUSER = "jetgrid"


class PostgresUnavailable(JetgridError):
    """No PostgreSQL binaries here, or the server would not start; the message says which."""


def postgres_bindir() -> Path | None:
    """Directory holding initdb and pg_ctl: PATH first, then Debian's versioned directories."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(os.path.realpath(found)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    return Path(candidates[0]).parent if candidates else None


class PostgresServer:
    """One PostgreSQL cluster in `root`, listening on 127.0.0.1:`port` (trust auth, no fsync)."""

    def __init__(self, root: Path, port: int, *, run_as: str | None = None) -> None:
        bindir = postgres_bindir()
        if bindir is None:
            raise PostgresUnavailable(
                "PostgreSQL is not installed here (no initdb/pg_ctl on PATH or in "
                "/usr/lib/postgresql/*/bin); install Debian's `postgresql` package."
            )
        self.bindir = bindir
        self.root = Path(root)
        self.data = self.root / "data"
        self.port = port
        self.run_as = run_as or ("postgres" if os.geteuid() == 0 else None)
        self._uid: int | None = None
        if self.run_as:
            try:
                self._uid = pwd.getpwnam(self.run_as).pw_uid
            except KeyError:
                raise ConfigError(
                    f"PostgreSQL will not run as root and there is no user {self.run_as!r}."
                ) from None

    @property
    def dsn(self) -> str:
        """A libpq/asyncpg DSN for database `postgres`."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/postgres"

    def url(self, database: str = "postgres") -> str:
        """A SQLAlchemy async URL (asyncpg driver) for `database`."""
        return f"postgresql+asyncpg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str) -> None:
        try:
            subprocess.run(
                args, check=True, capture_output=True, user=self._uid, cwd=self.root, timeout=60
            )
        except subprocess.CalledProcessError as exc:
            out = (exc.stdout + exc.stderr).decode(errors="replace")
            raise PostgresUnavailable(f"{Path(args[0]).name} failed:\n{out}") from exc

    def start(self) -> PostgresServer:
        self.root.mkdir(parents=True, exist_ok=True)
        if self._uid is not None:
            os.chown(self.root, self._uid, -1)
        if not (self.data / "PG_VERSION").exists():
            self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", SUPERUSER,
                      "--auth=trust", "-E", "UTF8", "--no-sync")  # fmt: skip
        # -F: no fsync (a throwaway server); the socket lives in our dir, not /var/run.
        options = f"-h 127.0.0.1 -p {self.port} -k {self.root} -F"
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", options,
                  "-l", str(self.root / "postgres.log"), "-w", "-t", "30", "start")  # fmt: skip
        return self

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["PostgresServer", "PostgresUnavailable", "postgres_bindir"]
