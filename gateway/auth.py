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

Keys take effect without a restart: `KeyRing` looks at the keys file's identity (inode, size,
modification and change times) at most once every `KEYS_POLL_S` seconds of the injectable
clock, on the next request, and reloads it when it changed. Adding the first key closes an open
gateway, removing a line (`jetgrid keys revoke`) revokes that key. A keys file that cannot be
used fails closed: at start it is a one-line `KeysFileError`; while running, every guarded route
answers 503 naming the file's fault until it is fixed. A rate must be a positive, finite number
of requests per second (`check_rate`).
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import logging
import math
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.requests import Request

from jetgrid.coordinator.settings import Settings
from jetgrid.events import ConfigError
from jetgrid.gateway.errors import HTTPError
from jetgrid.gateway.ratelimit import Bucket, take

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/", "/favicon.ico"})
OPEN_PREFIXES = ("/static/",)
SCOPE_KEY = "jetgrid.key"
SUBMITTER_HEADER = "x-jetgrid-submitter"
ANONYMOUS = "anonymous"
MAX_SUBMITTER_LEN = 128
KEYS_POLL_S = 1.0

log = logging.getLogger("jetgrid.gateway.auth")


class KeysFileError(ConfigError, ValueError):
    """A keys file, key hash or rate that cannot be used; the message names it and the fix."""


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
        raise KeysFileError(
            f"{where}: {value!r} is not a 'sha256:<64 lower-case hex>' key hash; "
            "fix or remove it (`jetgrid keys add` writes valid ones)."
        )
    return value


def check_rate(value: float, where: str = "rate") -> float:
    """`value` if it is a usable per-key rate (requests/s: positive and finite), else
    KeysFileError naming it (0 would mean unlimited: leave the rate out for the gateway's)."""
    if not (math.isfinite(value) and value > 0):
        raise KeysFileError(
            f"{where} {value!r} is not a positive, finite number of requests per second; "
            "give one such as 5, or leave the rate out for the gateway's default."
        )
    return value


def parse_keys(text: str, where: str = "keys file") -> list[ApiKey]:
    """Parse the keys file format (module docstring); raises KeysFileError naming the line."""
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
                raise KeysFileError(
                    f"{where} line {n}: {item!r} is not name=, pools=, models= or rate=; "
                    "fix or remove that line."
                )
            if k in ("pools", "models"):
                fields[k] = tuple(p for p in v.split(",") if p)
            elif k == "rate":
                try:
                    rate = float(v)
                except ValueError:
                    raise KeysFileError(
                        f"{where} line {n}: rate {v!r} is not a number; give requests per "
                        "second, such as rate=5."
                    ) from None
                fields[k] = check_rate(rate, f"{where} line {n}: rate")
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


def without_key(text: str, name: str, where: str = "keys file") -> tuple[str, int]:
    """The keys file `text` without the lines of the key called `name` (comments and other
    lines kept as they are), and how many lines were removed."""
    parse_keys(text, where)  # a bad line is named as it is in the file
    kept, removed = [], 0
    for raw in text.splitlines(keepends=True):
        parsed = parse_keys(raw)
        if parsed and parsed[0].name == name:
            removed += 1
        else:
            kept.append(raw)
    return "".join(kept), removed


def load_keys(path: Path | None, env_hashes: str | None) -> list[ApiKey]:
    """The keys of the keys file (none if it does not exist) and of `env_hashes`; a file that
    cannot be read or parsed raises KeysFileError, one line naming the fault and the fix."""
    keys: list[ApiKey] = []
    if path is not None:
        try:
            text = path.read_text()
        except FileNotFoundError:
            text = ""
        except OSError as exc:
            raise KeysFileError(
                f"Cannot use {str(path)!r}: {exc.strerror or exc}; check the path and its "
                "permissions."
            ) from None
        except UnicodeDecodeError:
            raise KeysFileError(
                f"The keys file {str(path)!r} is not UTF-8 text; rewrite it with "
                "`jetgrid keys add`."
            ) from None
        keys = parse_keys(text, str(path))
    for i, h in enumerate(p.strip() for p in (env_hashes or "").split(",")):
        if h:
            keys.append(ApiKey(hash=_check_hash(h, "JETGRID_API_KEYS"), name=f"env-{i + 1}"))
    return keys


def keys_path(settings: Settings) -> Path:
    """The keys file: `api_keys_file`, else ``<data_dir>/api-keys``."""
    return settings.api_keys_file or settings.data_dir / "api-keys"


def _identity(path: Path | None) -> tuple[int, ...] | None:
    """What tells a changed keys file apart: inode, size, mtime and ctime (None: no file)."""
    if path is None:
        return None
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError:
        return (-1,)  # unreadable: load_keys names the fault
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class KeyRing:
    """The keys in force: the keys file and `env_hashes`, reloaded when the file changes.

    `current(now)` looks at the file at most once every `poll_s` (of the caller's clock) and
    returns the keys by hash, or a KeysFileError when the file cannot be used (fail closed).
    """

    def __init__(
        self, path: Path | None, env_hashes: str | None, *, poll_s: float = KEYS_POLL_S
    ) -> None:
        self.path = path
        self.env_hashes = env_hashes
        self.poll_s = poll_s
        self._seen: tuple[int, ...] | None = _identity(path)
        self._checked: float | None = None
        # At start a bad file is raised, so that the gateway does not start open.
        self._keys: dict[str, ApiKey] | KeysFileError = self._load()
        if isinstance(self._keys, KeysFileError):
            raise self._keys

    def _load(self) -> dict[str, ApiKey] | KeysFileError:
        try:
            return {k.hash: k for k in load_keys(self.path, self.env_hashes)}
        except KeysFileError as exc:
            return exc

    def keys(self) -> list[ApiKey]:
        """The keys loaded last (none while the file is broken)."""
        return [] if isinstance(self._keys, KeysFileError) else list(self._keys.values())

    def current(self, now: float) -> dict[str, ApiKey] | KeysFileError:
        """The keys in force at `now`, reloading the file if it changed since last looked."""
        if self._checked is not None and now - self._checked < self.poll_s:
            return self._keys
        self._checked = now
        seen = _identity(self.path)
        if seen != self._seen or seen == (-1,):
            self._seen = seen
            before = self._keys
            self._keys = self._load()
            self._log_change(before)
        return self._keys

    def _log_change(self, before: dict[str, ApiKey] | KeysFileError) -> None:
        now = self._keys
        if isinstance(now, KeysFileError):
            if str(now) != str(before):
                log.error("gateway: refusing every guarded request: %s", now)
        elif not now:
            log.warning("gateway: the keys file now holds no keys; the HTTP API is open")
        elif isinstance(before, KeysFileError) or set(now) != set(before):
            log.info("gateway: reloaded the keys file: %d API key(s) in force", len(now))


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


def submitter(request: Request) -> str:
    """The caller's tenant (a job's `submitter`): its API key's name on a gateway with keys (a
    client's ``x-jetgrid-submitter`` header cannot choose another), else that header, else
    ``anonymous``."""
    key: ApiKey | None = request.scope.get(SCOPE_KEY)
    if key is not None:
        return key.name
    value = request.headers.get(SUBMITTER_HEADER)
    if value is None:
        return ANONYMOUS
    if not 1 <= len(value) <= MAX_SUBMITTER_LEN:
        raise HTTPError(
            422,
            f"Header {SUBMITTER_HEADER!r} must be 1-{MAX_SUBMITTER_LEN} characters; "
            f"got {len(value)}.",
            field=SUBMITTER_HEADER,
        )
    return value


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


def _headers(scope: dict[str, Any]) -> tuple[bytes | None, bool, bytes]:
    """(Content-Length, whether a Transfer-Encoding is given, Authorization) of a request, in
    one pass over its headers (ASGI gives their names in lower case). Of repeated headers the
    last counts, as a dict of them would say."""
    length: bytes | None = None
    chunked = False
    authorization = b""
    for name, value in scope.get("headers") or ():
        if name == b"content-length":
            length = value
        elif name == b"transfer-encoding":
            chunked = True
        elif name == b"authorization":
            authorization = value
    return length, chunked, authorization


class Guard:
    """ASGI middleware: request-size limit, then API key, then the key's rate limit."""

    def __init__(
        self,
        app: ASGIApp,
        keys: KeyRing,
        *,
        max_body: int,
        rate: float,
        burst: float,
        clock: Callable[[], float] = time.monotonic,
        uploads: Mapping[str, int] | None = None,
    ) -> None:
        self.app = app
        self.ring = keys
        self.max_body = max_body
        # Paths that take larger bodies (file uploads: POST /v1/files), with their limit.
        self.uploads = dict(uploads or {})
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.buckets: dict[str, Bucket] = {}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        open_path = path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)
        try:
            length, chunked, authorization = _headers(scope)
            receive = self._limit_size(path, length, chunked, receive)
            by_hash = self.ring.current(self.clock())
            if not open_path and isinstance(by_hash, KeysFileError):
                raise HTTPError(
                    503,
                    f"This gateway refuses requests until its keys file is fixed: {by_hash}",
                    headers={"Retry-After": "5"},
                )
            if not open_path and by_hash and isinstance(by_hash, dict):
                key = self._authenticate(authorization, by_hash)
                scope[SCOPE_KEY] = key
                self._rate_limit(key)
        except HTTPError as exc:
            await exc.response(path)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _limit_size(self, path: str, length: bytes | None, chunked: bool, receive: Any) -> Any:
        """`receive`, counting the body when its length is not bounded by a valid
        Content-Length (chunked, or a Content-Length that is not a number); 413 past the limit.
        Without Transfer-Encoding a request's body is exactly Content-Length bytes, or none
        (RFC 9112 section 6.3, enforced by the HTTP parser), so it is not counted again."""
        limit = self.uploads.get(path, self.max_body) if self.uploads else self.max_body
        if length is not None and length.isdigit():
            if int(length) > limit:
                raise HTTPError(413, self._too_big(int(length), limit), field="body")
            if not chunked:
                return receive
        elif length is None and not chunked:
            return receive
        seen = 0

        async def counted() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise HTTPError(413, self._too_big(seen, limit), field="body")
            return message

        return counted

    def _too_big(self, n: int, limit: int) -> str:
        return f"Request body is {n} bytes; this gateway accepts at most {limit}."

    def _authenticate(self, authorization: bytes, by_hash: dict[str, ApiKey]) -> ApiKey:
        raw = authorization.decode("latin-1")
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
        for h, key in by_hash.items():
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
