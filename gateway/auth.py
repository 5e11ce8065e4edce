"""API keys, per-key rate limits and the request-size limit, as one ASGI middleware.

Keys are stored only as hashes, ``sha256:<hex>`` of the key. The keys file (settings
`api_keys_file`, default ``<data_dir>/api-keys``; `jetgrid keys add` writes it) has one key a
line, with optional scopes::

    # name=ci, any pool, models starting with llama, 5 requests/s
    sha256:9f86d08...  name=ci  pools=fast,standard  models=llama*,echo  rate=5

`JETGRID_API_KEYS` adds bare hashes (comma-separated), unscoped. When any key is configured,
every route but /healthz, /readyz and the dashboard's static page needs
``Authorization: Bearer <key>``; without keys the gateway is open and says so in its log.
Errors come in the shape of the API the path belongs to (gateway.errors).
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.requests import Request

from jetgrid.coordinator.settings import Settings
from jetgrid.gateway.errors import HTTPError
from jetgrid.gateway.ratelimit import Bucket, take

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/", "/favicon.ico"})
OPEN_PREFIXES = ("/static/",)
SCOPE_KEY = "jetgrid.key"


@dataclass(frozen=True, slots=True)
class ApiKey:
    hash: str
    name: str = "key"
    pools: tuple[str, ...] | None = None
    models: tuple[str, ...] | None = None
    rate: float | None = None


def hash_key(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return "jg_" + secrets.token_urlsafe(32)


def _check_hash(value: str, where: str) -> str:
    algo, _, hexd = value.partition(":")
    if algo != "sha256" or len(hexd) != 64 or any(c not in "0123456789abcdef" for c in hexd):
        raise ValueError(f"{where}: {value!r} is not a 'sha256:<64 lower-case hex>' key hash.")
    return value


def parse_keys(text: str, where: str = "keys file") -> list[ApiKey]:
    """Parse the keys file format (module docstring); raises ValueError naming the line."""
    keys = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        first, *rest = line.split()
        fields: dict[str, Any] = {"hash": _check_hash(first, f"{where} line {n}")}
        for item in rest:
            k, sep, v = item.partition("=")
            if not sep or k not in ("name", "pools", "models", "rate"):
                raise ValueError(
                    f"{where} line {n}: {item!r} is not name=, pools=, models= or rate=."
                )
            if k in ("pools", "models"):
                fields[k] = tuple(p for p in v.split(",") if p)
            elif k == "rate":
                try:
                    fields[k] = float(v)
                except ValueError:
                    raise ValueError(f"{where} line {n}: rate {v!r} is not a number.") from None
            else:
                fields[k] = v
        keys.append(ApiKey(**fields))
    return keys


def key_line(key: ApiKey) -> str:
    parts = [key.hash, f"name={key.name}"]
    if key.pools:
        parts.append("pools=" + ",".join(key.pools))
    if key.models:
        parts.append("models=" + ",".join(key.models))
    if key.rate is not None:
        parts.append(f"rate={key.rate:g}")
    return "  ".join(parts)


def load_keys(path: Path | None, env_hashes: str | None) -> list[ApiKey]:
    keys = parse_keys(path.read_text(), str(path)) if path and path.exists() else []
    for i, h in enumerate(p.strip() for p in (env_hashes or "").split(",")):
        if h:
            keys.append(ApiKey(hash=_check_hash(h, "JETGRID_API_KEYS"), name=f"env-{i + 1}"))
    return keys


def keys_path(settings: Settings) -> Path:
    """The keys file: `api_keys_file`, else ``<data_dir>/api-keys``."""
    return settings.api_keys_file or settings.data_dir / "api-keys"


def access_line(settings: Any) -> str:
    """One line saying whether the gateway needs keys, for `jetgrid up` to print."""
    n = len(load_keys(keys_path(settings), settings.api_keys))
    if n:
        return f"{n} API key(s) required (Authorization: Bearer <key>)"
    return (
        f"OPEN: no API keys configured, anyone reaching {settings.gateway_host} may call it "
        "(`jetgrid keys add NAME` creates one)"
    )


def _allows(key: ApiKey, pool: str | None, model: str | None) -> bool:
    if key.pools is not None and pool is not None and pool not in key.pools:
        return False
    return (
        key.models is None
        or model is None
        or any(fnmatch.fnmatchcase(model, p) for p in key.models)
    )


def may_see(request: Request, *, pool: str | None, model: str | None) -> bool:
    """Whether the caller's key covers a job of this pool and model (unscoped keys: all)."""
    key: ApiKey | None = request.scope.get(SCOPE_KEY)
    return key is None or _allows(key, pool, model)


def visible_models(request: Request, live: Mapping[str, Iterable[str]]) -> list[str]:
    """The live models (model -> pools serving it) the caller's key may use, sorted."""
    key: ApiKey | None = request.scope.get(SCOPE_KEY)
    return sorted(
        m for m, pools in live.items() if key is None or any(_allows(key, p, m) for p in pools)
    )


def check_scope(request: Request, *, pool: str | None, model: str | None) -> None:
    """403 naming the scope when the caller's key may not use this pool or model."""
    key: ApiKey | None = request.scope.get(SCOPE_KEY)
    if key is None:
        return
    if key.pools is not None and pool is not None and pool not in key.pools:
        raise HTTPError(
            403,
            f"API key '{key.name}' is scoped to pools {list(key.pools)}; pool {pool!r} is not one.",
            field="pool",
        )
    if (
        key.models is not None
        and model is not None
        and not any(fnmatch.fnmatchcase(model, p) for p in key.models)
    ):
        raise HTTPError(
            403,
            f"API key '{key.name}' is scoped to models {list(key.models)}; "
            f"model {model!r} matches none.",
            field="model",
        )


ASGIApp = Callable[..., Awaitable[None]]


class Guard:
    """ASGI middleware: request-size limit, then API key, then the key's rate limit."""

    def __init__(
        self,
        app: ASGIApp,
        keys: list[ApiKey],
        *,
        max_body: int,
        rate: float,
        burst: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.by_hash = {k.hash: k for k in keys}
        self.max_body = max_body
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.buckets: dict[str, Bucket] = {}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        try:
            receive = self._limit_size(scope, receive)
            if self.by_hash and not (path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)):
                key = self._authenticate(scope)
                scope[SCOPE_KEY] = key
                self._rate_limit(key)
        except HTTPError as exc:
            await exc.response(path)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _limit_size(self, scope: dict[str, Any], receive: Any) -> Any:
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            raise HTTPError(413, self._too_big(int(length)), field="body")
        seen = 0

        async def counted() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise HTTPError(413, self._too_big(seen), field="body")
            return message

        return counted

    def _too_big(self, n: int) -> str:
        return f"Request body is {n} bytes; this gateway accepts at most {self.max_body}."

    def _authenticate(self, scope: dict[str, Any]) -> ApiKey:
        headers = dict(scope.get("headers") or [])
        raw = headers.get(b"authorization", b"").decode("latin-1")
        scheme, _, token = raw.partition(" ")
        hdr = {"WWW-Authenticate": 'Bearer realm="jetgrid"'}
        if scheme.lower() != "bearer" or not token.strip():
            raise HTTPError(
                401,
                "This gateway needs an API key: send 'Authorization: Bearer <key>'.",
                field="Authorization",
                headers=hdr,
            )
        digest = hash_key(token.strip())
        for h, key in self.by_hash.items():
            if hmac.compare_digest(h, digest):
                return key
        raise HTTPError(401, "The API key is not valid.", field="Authorization", headers=hdr)

    def _rate_limit(self, key: ApiKey) -> None:
        rate = self.rate if key.rate is None else key.rate
        burst = max(self.burst, rate)
        bucket, wait = take(self.buckets.get(key.hash), self.clock(), rate, burst)
        self.buckets[key.hash] = bucket
        if wait > 0:
            secs = max(1, math.ceil(wait))
            raise HTTPError(
                429,
                f"API key '{key.name}' is over its rate limit of {rate:g} requests/s; "
                f"retry in {secs} s.",
                headers={"Retry-After": str(secs)},
            )
