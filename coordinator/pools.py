"""Pools as plain data: which models route where, and each pool's delivery parameters.

A pools file (TOML, ``--pools-file`` / ``JETGRID_POOLS_FILE``) lists pools in routing order::

    [[pool]]
    name = "fast"
    models = ["*:0.5b", "*:1b", "*:1.5b", "*-mini*"]   # fnmatch patterns, first pool wins
    ack_wait_s = 15          # lease; workers extend it with in-progress acks
    max_deliver = 5          # runs before the job is dead (its consumer allows one more)
    quarantine_after = 3     # runs that ended with no outcome (the worker died) before it is dead
    backoff_s = [1, 5, 15]   # waits after transient failures (the last one repeats)
    job_timeout_cap_s = 120  # a job's own timeout_s is capped at this
    max_backlog = 500        # shedding (coordinator.shedding): beyond it, submits get 429
    max_wait_s = 60          # shedding: past it, submits get 429 and late jobs are rejected
    stall_after_s = 120      # stalls (coordinator.stalls): no token for this long, handed back

Without a file, the pools named in Settings.pools get the defaults below. A model that matches
no pattern goes to the default pool (Settings.default_pool).
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from jetgrid.events import ConfigError, check_id


@dataclass(frozen=True, slots=True)
class PoolConfig:
    name: str
    models: tuple[str, ...] = ()
    ack_wait_s: float = 30.0
    max_deliver: int = 5
    quarantine_after: int = 3
    backoff_s: tuple[float, ...] = (1.0, 5.0, 30.0)
    job_timeout_cap_s: float = 600.0
    max_ack_pending: int = 1000
    extra: dict[str, Any] = field(default_factory=dict)
    max_backlog: int | None = None  # shedding (coordinator.shedding): queued jobs per model
    max_wait_s: float | None = None  # shedding: the oldest queued job's wait
    stall_after_s: float | None = None  # stalls (coordinator.stalls): None, no watchdog

    def retry_delay(self, attempt: int) -> float:
        """Seconds before delivery attempt+1 after a transient failure of `attempt` (>= 1)."""
        if attempt < 1:
            raise ValueError(f"attempt must be >= 1, got {attempt}")
        if not self.backoff_s:
            return 0.0
        return self.backoff_s[min(attempt, len(self.backoff_s)) - 1]

    def timeout_for(self, requested_s: float | None) -> float:
        """The timeout a job gets: its own, capped by the pool's."""
        if requested_s is None:
            return self.job_timeout_cap_s
        return min(requested_s, self.job_timeout_cap_s)

    def matches(self, model: str) -> bool:
        """Whether `model` matches one of the patterns (fnmatch.fnmatchcase rules)."""
        return bool(self.models) and _matcher(self.models)(model) is not None


@lru_cache(maxsize=256)
def _matcher(patterns: tuple[str, ...]) -> Callable[[str], re.Match[str] | None]:
    """One compiled regex for all of `patterns` (routing runs it on every submission)."""
    return re.compile("|".join(fnmatch.translate(p) for p in patterns)).match


DEFAULTS: dict[str, PoolConfig] = {
    "fast": PoolConfig(
        "fast",
        models=("*:0.5b", "*:1b", "*:1.5b", "*:2b", "*:3b", "*-mini", "*-mini:*"),
        ack_wait_s=15.0,
        backoff_s=(0.5, 2.0, 5.0),
        job_timeout_cap_s=120.0,
    ),
    "standard": PoolConfig("standard"),
    "heavy": PoolConfig(
        "heavy",
        models=("*:32b", "*:70b", "*:72b", "*:405b", "*:671b"),
        ack_wait_s=60.0,
        backoff_s=(5.0, 30.0, 120.0),
        job_timeout_cap_s=3600.0,
    ),
}


@dataclass(frozen=True, slots=True)
class Pools:
    """The deployment's pools, in routing order, and the pool for unmatched models."""

    pools: tuple[PoolConfig, ...]
    default: str
    # The same pools by name (every submission looks its pool up more than once).
    _by_name: dict[str, PoolConfig] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = [p.name for p in self.pools]
        if len(names) != len(set(names)):
            raise ConfigError(f"Pool names must be unique, got {names}.")
        if self.default not in names:
            raise ConfigError(f"Default pool {self.default!r} is not one of the pools {names}.")
        object.__setattr__(self, "_by_name", {p.name: p for p in self.pools})

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.pools)

    def get(self, name: str) -> PoolConfig | None:
        return self._by_name.get(name)

    def __getitem__(self, name: str) -> PoolConfig:
        return self._by_name[name]

    def route(self, model: str) -> str:
        """The pool a job for `model` goes to when it names none: first match, else default."""
        for p in self.pools:
            if p.matches(model):
                return p.name
        return self.default


def default_pools(names: tuple[str, ...], default: str) -> Pools:
    return Pools(tuple(DEFAULTS.get(n, PoolConfig(n)) for n in names), default)


def _pool_from(raw: Any, where: str) -> PoolConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: each [[pool]] must be a table, got {raw!r}.")
    data = dict(raw)
    name = data.pop("name", None)
    if not isinstance(name, str):
        raise ConfigError(f"{where}: a pool needs a string 'name', got {name!r}.")
    try:
        check_id(name, "pool name")
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    base = DEFAULTS.get(name, PoolConfig(name))
    known = set(PoolConfig.__dataclass_fields__) - {"name", "extra"}
    extra = {k: data.pop(k) for k in list(data) if k not in known}
    try:
        fields: dict[str, Any] = {}
        if "models" in data:
            fields["models"] = tuple(str(m) for m in data.pop("models"))
        if "backoff_s" in data:
            fields["backoff_s"] = tuple(float(b) for b in data.pop("backoff_s"))
        for k in ("ack_wait_s", "job_timeout_cap_s"):
            if k in data:
                fields[k] = float(data.pop(k))
        for k in ("max_deliver", "max_ack_pending", "quarantine_after"):
            if k in data:
                fields[k] = int(data.pop(k))
        if "max_backlog" in data:
            fields["max_backlog"] = _whole(data.pop("max_backlog"))
        if "max_wait_s" in data:
            fields["max_wait_s"] = float(data.pop("max_wait_s"))
        if "stall_after_s" in data:
            fields["stall_after_s"] = float(data.pop("stall_after_s"))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: pool {name!r} has a bad value: {exc}.") from None
    pool = replace(base, extra=extra, **fields)
    if pool.quarantine_after < 1:
        raise ConfigError(
            f"{where}: pool {name!r} has quarantine_after {pool.quarantine_after}; give 1 or more."
        )
    if pool.ack_wait_s <= 0 or pool.max_deliver < 1 or pool.job_timeout_cap_s <= 0:
        raise ConfigError(
            f"{where}: pool {name!r} needs ack_wait_s > 0, max_deliver >= 1 and "
            f"job_timeout_cap_s > 0 (got {pool.ack_wait_s}, {pool.max_deliver}, "
            f"{pool.job_timeout_cap_s})."
        )
    if (pool.max_backlog is not None and pool.max_backlog < 1) or (
        pool.max_wait_s is not None and not pool.max_wait_s > 0
    ):
        raise ConfigError(
            f"{where}: pool {name!r} needs max_backlog >= 1 and max_wait_s > 0 when set "
            f"(got {pool.max_backlog}, {pool.max_wait_s}); leave a key out for no limit."
        )
    if pool.stall_after_s is not None and not pool.stall_after_s > 0:
        raise ConfigError(
            f"{where}: pool {name!r} has stall_after_s {pool.stall_after_s}; give a number of "
            f"seconds > 0, or leave it out for no stall watchdog."
        )
    if any(b < 0 for b in pool.backoff_s):
        raise ConfigError(f"{where}: pool {name!r} has a negative backoff: {pool.backoff_s}.")
    return pool


def _whole(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"max_backlog must be a whole number, got {value!r}")
    return value


def parse_pools(text: str, *, default: str, where: str = "pools file") -> Pools:
    """Pools from the TOML text of a pools file."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where} is not valid TOML: {exc}.") from None
    raw = data.get("pool")
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where} must define at least one [[pool]].")
    default = data.get("default_pool", default)
    return Pools(tuple(_pool_from(r, where) for r in raw), default)


def load_pools(path: Path | None, names: tuple[str, ...], default: str) -> Pools:
    """The pools file at `path` if given, else the defaults for `names`."""
    if path is None:
        return default_pools(names, default)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"Cannot read pools file {str(path)!r}: {exc.strerror}.") from None
    return parse_pools(text, default=default, where=f"pools file {str(path)!r}")
