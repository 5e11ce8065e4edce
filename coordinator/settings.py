"""One settings object for every jetgrid process.

Read once, from the environment (``JETGRID_<FIELD>``, e.g. ``JETGRID_NATS_URL``), then overridden by
command-line flags, then passed down explicitly. This module is the only place that reads
``os.environ`` (through Settings.from_env's argument, which the CLI supplies).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from jetgrid.coordinator.pools import Pools, load_pools
from jetgrid.events import (
    DEAD_LETTERS,
    INVALID,
    JOB_EVENTS,
    JOBS,
    MAX_CLAIM_DELAY_S,
    WORKERS,
    ConfigError,
    StreamNames,
    Subjects,
)
from jetgrid.events.streams import ROLLUPS, TOKENS, Retention, check_retention, parse_retention

ENV_PREFIX = "JETGRID_"
_RETENTION_FIELDS = {
    "workers": WORKERS,
    "jobs": JOBS,
    "job_events": JOB_EVENTS,
    "invalid": INVALID,
    "dead_letters": DEAD_LETTERS,
    "rollups": ROLLUPS,
    "tokens": TOKENS,
}
DEFAULT_POOLS = ("fast", "standard", "heavy")
_SECRETS = frozenset({"nats_password", "nats_token", "webhook_secret"})


class Settings(BaseModel):
    """Every knob, with its default. Flags > environment > these defaults."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # NATS connection (a comma-separated list of URLs for a cluster) and credentials.
    nats_url: str = "nats://127.0.0.1:4222"
    nats_user: str | None = None
    nats_password: SecretStr | None = None
    nats_token: SecretStr | None = None
    nats_creds: Path | None = None
    nats_tls_ca: Path | None = None
    nats_tls_cert: Path | None = None
    nats_tls_key: Path | None = None
    # Replies and pull deliveries arrive under this prefix. Unset: _INBOX_<nats_user> when a
    # user is set (the private prefix its role may subscribe to, see coordinator.roles), else
    # _INBOX.
    nats_inbox_prefix: str | None = None
    nats_connect_timeout_s: float = Field(default=5.0, gt=0)
    # How long a JetStream call waits for its answer (a refused one surfaces as this timeout).
    nats_js_timeout_s: float = Field(default=5.0, gt=0)

    # Naming: subjects live under subject_prefix; stream names get stream_prefix in front.
    subject_prefix: str = "jetgrid"
    stream_prefix: str = ""
    stream_replicas: int = Field(default=1, ge=1, le=5)
    duplicate_window_s: float = Field(default=3600.0, gt=0)
    # Retention per stream: an age, optionally a size ("7d", "30d,20GiB", "0" = forever);
    # defaults and why in events.streams. `jetgrid provision` applies changes to live streams.
    retention_workers: str = "7d"
    retention_jobs: str = "30d"
    retention_job_events: str = "30d"
    retention_invalid: str = "30d"
    retention_dead_letters: str = "30d"
    retention_rollups: str = "0"  # forever: hour rollups keep uptime answerable (README)
    retention_tokens: str = "1h"  # token chunks: long enough to resume a stream (README)
    # Where TOKENS keeps chunks: memory (default; see events.streams) or file.
    tokens_storage: Literal["memory", "file"] = "memory"

    # Pools: names (each gets coordinator.pools defaults) or a pools file with full config.
    pools: tuple[str, ...] = DEFAULT_POOLS
    default_pool: str = "standard"
    pools_file: Path | None = None

    # The embedded default (`jetgrid up`).
    data_dir: Path = Path(".jetgrid")
    nats_host: str = "127.0.0.1"
    nats_port: int = Field(default=4222, ge=0, le=65535)
    nats_conf: Path | None = None
    gateway_host: str = "127.0.0.1"
    gateway_port: int = Field(default=8080, ge=0, le=65535)
    workers: int = Field(default=2, ge=0)
    # Remote Python functions over HTTP (POST /v1/jobs with kind "python"): off by default.
    gateway_allow_python: bool = False
    # POST /v1/jobs answers 422 for a (pool, model) no worker has served within this many
    # seconds (live workers always count), unless the caller asks ?queue_unserved=true.
    unserved_model_window_s: float = Field(default=600.0, ge=0, allow_inf_nan=False)

    # Gateway access: API key hashes (keys file, default <data_dir>/api-keys, and/or
    # comma-separated `sha256:<hex>` hashes), per-key rate limit, request-size limit.
    api_keys_file: Path | None = None
    api_keys: str | None = None
    rate_limit_per_s: float = Field(default=20.0, ge=0, allow_inf_nan=False)
    rate_limit_burst: float = Field(default=40.0, ge=1, allow_inf_nan=False)
    max_request_bytes: int = Field(default=1024 * 1024, ge=1)
    # Concurrent open streams (job event streams, streaming LLM responses) and open waits
    # (`?wait=`, non-streaming LLM requests), per API key (per client address on an open
    # gateway) and per gateway; beyond them a request is answered 429 with Retry-After.
    max_streams_per_key: int = Field(default=100, ge=1)
    max_streams: int = Field(default=10000, ge=1)
    max_waits_per_key: int = Field(default=100, ge=1)
    max_waits: int = Field(default=10000, ge=1)

    # Workers.
    heartbeat_interval_s: float = Field(default=5.0, gt=0)
    # Tier-aware pulling: a worker's base rate (jobs/s; 0 = unlimited) times its tier factor.
    pull_rate: float = Field(default=0.0, ge=0)
    pull_burst: float = Field(default=0.0, ge=0, description="bucket size; 0 = max(1, rate)")
    # Work-conserving tiers (coordinator.fallback): a worker held back by its tier takes jobs no
    # one else took for this many seconds times its tier's rank (none last); 0 = strict tiers.
    fallback_wait_s: float = Field(default=5.0, ge=0)
    # A job's first run publishes `started` once it has run this long; a run over sooner
    # records its claim on its outcome instead (events.JobStarted). 0: publish at once.
    started_after_s: float = Field(default=0.1, ge=0, le=MAX_CLAIM_DELAY_S)

    # Uptime and tiers (coordinator.tiers, projections.uptime).
    tier_policy: str | None = None  # e.g. "0.99:1.0,0.95:0.5,0.90:0.1,0:0"
    tier_policy_file: Path | None = None  # TOML, see coordinator.tiers
    uptime_windows: str = "1h,24h"
    tier_window: str | None = None  # the window tiers are computed over; default the first

    # Read models (projections): SQLAlchemy async URL; default SQLite in the data dir.
    db_url: str | None = None
    # The projector snapshots its read models (projections.snapshot) after this many messages
    # or this much event time (seconds of stream time) since the last one; 0 turns a rule off.
    snapshot_every: int = Field(default=100_000, ge=0)
    snapshot_every_s: float = Field(default=6 * 3600.0, ge=0)

    # Webhooks (coordinator.webhooks, jetgrid.webhooks): the deployment secret that signs when
    # no API keys are configured (``whsec_<base64>``), whether private and loopback targets may
    # be called, how many attempts a delivery gets before it is recorded as given up, and the
    # timeout of one attempt.
    webhook_secret: SecretStr | None = None
    webhook_allow_private: bool = False
    webhook_attempts: int = Field(default=8, ge=1, le=100)
    webhook_timeout_s: float = Field(default=10.0, gt=0, allow_inf_nan=False)
    # The wait after a delivery's first failure; it doubles at each further one, up to 10 min.
    webhook_retry_s: float = Field(default=5.0, gt=0, allow_inf_nan=False)
    # The Batch API (gateway.files, gateway.batches): the largest file one upload may hold, the
    # most lines one batch may have, and how long files and batches are kept ("30d"; "0" keeps
    # them forever).
    files_max_bytes: int = Field(default=100 * 1024 * 1024, ge=1)
    batch_max_lines: int = Field(default=10_000, ge=1)
    retention_files: str = "30d"
    # Usage (projections.usage): the price table GET /v1/usage applies (TOML, projections.prices).
    prices_file: Path | None = None
    # The longest period one GET /v1/usage may ask for, in seconds (its cost follows the period).
    usage_max_period_s: float = Field(default=31 * 86400.0, gt=0)

    # Traces (worker.tracing): OTLP over HTTP, e.g. http://collector:4318/v1/traces; unset, none.
    otlp_endpoint: str | None = None

    # Logging: quiet by default.
    log_level: Literal["debug", "info", "warning", "error"] = "warning"
    log_json: bool = False

    @field_validator("pools", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        if isinstance(v, str):
            return tuple(p.strip() for p in v.split(",") if p.strip())
        return v

    @field_validator(*(f"retention_{k}" for k in _RETENTION_FIELDS))
    @classmethod
    def _retention(cls, v: str, info: Any) -> str:
        logical = _RETENTION_FIELDS[info.field_name.removeprefix("retention_")]
        try:
            check_retention(logical, parse_retention(v, info.field_name))
        except ConfigError as exc:
            raise ValueError(str(exc).rstrip(".")) from None
        return v

    @field_validator("retention_files")
    @classmethod
    def _files_retention(cls, v: str) -> str:
        try:
            parse_retention(v, "retention_files")
        except ConfigError as exc:
            raise ValueError(str(exc).rstrip(".")) from None
        return v

    @field_validator("webhook_secret")
    @classmethod
    def _whsec(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None:
            raw = v.get_secret_value().removeprefix("whsec_")
            try:
                ok = len(base64.b64decode(raw, validate=True)) > 0
            except ValueError:
                ok = False
            if not ok:
                raise ValueError("it must be 'whsec_' followed by base64 bytes")
        return v

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return v.lower() if isinstance(v, str) else v

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: Any) -> Settings:
        """Settings from ``JETGRID_*`` variables, then `overrides` (None values are ignored)."""
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            key = ENV_PREFIX + name.upper()
            if key in env and env[key] != "":
                values[name] = env[key]
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise ConfigError(_explain(exc, values)) from exc

    def replace(self, **changes: Any) -> Settings:
        """A copy with `changes` applied and validated (None values are ignored)."""
        data = self.model_dump()
        data.update({k: v for k, v in changes.items() if v is not None})
        try:
            return type(self).model_validate(data)
        except ValidationError as exc:
            raise ConfigError(_explain(exc, data)) from exc

    # -- derived ----------------------------------------------------------------------------
    @property
    def subjects(self) -> Subjects:
        """The subject grammar under subject_prefix (one shared immutable object per prefix)."""
        return _subjects(self.subject_prefix)

    @property
    def streams(self) -> StreamNames:
        """The stream names behind stream_prefix (one shared immutable object per prefix)."""
        return _streams(self.stream_prefix)

    def pool_configs(self) -> Pools:
        """The pools: from pools_file if set, else the defaults for `pools`."""
        return load_pools(self.pools_file, self.pools, self.default_pool)

    @property
    def inbox_prefix(self) -> str:
        if self.nats_inbox_prefix:
            return self.nats_inbox_prefix
        return f"_INBOX_{self.nats_user}" if self.nats_user else "_INBOX"

    @property
    def servers(self) -> list[str]:
        return [u.strip() for u in self.nats_url.split(",") if u.strip()]

    @property
    def retention(self) -> dict[str, Retention]:
        """Each stream's retention (logical name -> Retention), from the retention_* settings."""
        return {
            logical: parse_retention(getattr(self, f"retention_{key}"), f"retention_{key}")
            for key, logical in _RETENTION_FIELDS.items()
        }

    @property
    def tiers_bucket(self) -> str:
        return self.streams.tiers_bucket

    @property
    def snapshot_bucket(self) -> str:
        return self.streams.snapshot_bucket

    @property
    def files_bucket(self) -> str:
        return self.streams.files_bucket

    @property
    def batches_bucket(self) -> str:
        return self.streams.batches_bucket

    @property
    def files_retention(self) -> Retention:
        """How long files and batch records are kept (retention_files)."""
        return parse_retention(self.retention_files, "retention_files")

    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite+aiosqlite:///{self.data_dir / 'jetgrid.db'}"

    @property
    def gateway_url(self) -> str:
        return f"http://{self.gateway_host}:{self.gateway_port}"


# Read on every request and event: built once per prefix, outside the model, so that equality,
# hashing, model_dump and copies of a Settings see only its fields.
@lru_cache(maxsize=64)
def _subjects(prefix: str) -> Subjects:
    return Subjects(prefix)


@lru_cache(maxsize=64)
def _streams(prefix: str) -> StreamNames:
    return StreamNames(prefix)


def _explain(exc: ValidationError, values: Mapping[str, Any]) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        field = str(err["loc"][0]) if err["loc"] else "?"
        shown = values.get(field, "<missing>")
        if field in _SECRETS and field in values:
            shown = "<hidden>"  # never repeat a secret in an error
        parts.append(
            f"Setting {field} (env {ENV_PREFIX}{field.upper()}) has value {shown!r}. {err['msg']}."
        )
    return " ".join(parts)
