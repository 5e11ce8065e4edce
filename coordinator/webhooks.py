"""Webhooks as plain functions: Standard Webhooks signatures, secrets, targets, retry timing.

Signing follows the Standard Webhooks specification (standardwebhooks.com): the signed content
is ``{webhook-id}.{webhook-timestamp}.{body}``, signed with HMAC-SHA256 under the secret's bytes
(a secret is ``whsec_`` + base64 of them), sent as ``webhook-signature: v1,<base64 digest>``
(several space-separated signatures may be sent during a secret rotation; one match is enough).
A receiver also refuses a timestamp outside its tolerance (`verify`, 5 minutes by default), so a
captured delivery cannot be replayed later.

Secrets: with API keys, each key has its own secret, derived from the key's stored hash
(`key_secret`), so the key's holder or the operator (`jetgrid keys secret NAME`) can read it and
no other key can; without keys, the deployment secret `JETGRID_WEBHOOK_SECRET` signs.

Targets: a webhook URL must be http(s) with a host; a host that is or resolves to a private,
loopback, link-local, multicast, reserved or unspecified address is refused unless the operator
allows such targets (`JETGRID_WEBHOOK_ALLOW_PRIVATE=1`). The gateway checks the literal URL at
submit (`check_url`), the webhook service checks the resolved addresses again at each delivery
(`check_addresses`), as DNS may change in between, and POSTs to the address it checked
(`pinned`; the Host header and, for https, the TLS server name stay the URL's host).

Submitters: a job's `submitter` is whatever its publisher wrote, so it alone never picks a key's
secret. The gateway, which authenticated the key, adds `submitter_proof` to the submission: an
HMAC over (job id, submitter, webhook URL) under a key derived from the key's webhook secret.
The webhook service signs with the key's secret only when `proof_holds` for a key of that name;
otherwise the delivery is not sent (`NOT_PROVEN`).

Retries: `DELIVERY` is the back-off between attempts (coordinator.backoff; its first delay is
the setting `webhook_retry_s`); `attempt_outcome` decides from the attempt number and the
answer whether to stop, retry or give up.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from jetgrid.coordinator.backoff import Backoff, TryAgain, after_failure
from jetgrid.events import ConfigError

__all__ = [
    "ALLOW_SETTING",
    "DELIVERY",
    "NOT_PROVEN",
    "SECRET_PREFIX",
    "Outcome",
    "TargetRefused",
    "attempt_outcome",
    "check_addresses",
    "check_url",
    "delivery_backoff",
    "headers",
    "key_secret",
    "payload",
    "pinned",
    "proof_holds",
    "secret_bytes",
    "sign",
    "submitter_proof",
    "verify",
]

SECRET_PREFIX = "whsec_"
ALLOW_SETTING = "JETGRID_WEBHOOK_ALLOW_PRIVATE"
DEFAULT_TOLERANCE_S = 300
MAX_URL = 2048
PROOF_PREFIX = "p1,"
NOT_PROVEN = "the submission's submitter is not proven"
# 5 s, 10 s, 20 s ... at most 10 minutes between attempts (the service's attempt limit ends it).
DELIVERY = Backoff(first_s=5.0, factor=2.0, max_s=600.0)


class TargetRefused(ConfigError, ValueError):
    """A webhook URL jetgrid will not call; the message names the URL and the fix."""


def secret_bytes(secret: str) -> bytes:
    """The key bytes of a ``whsec_<base64>`` secret (the prefix is optional)."""
    raw = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(raw, validate=True)
    except ValueError:
        key = b""
    if not key:
        raise ConfigError(
            "A webhook secret must be 'whsec_' followed by base64 bytes, such as the one "
            "`jetgrid keys secret NAME` prints; got one that is not."
        )
    return key


def key_secret(key_hash: str) -> str:
    """The webhook secret of the API key whose stored hash is `key_hash` (``sha256:<hex>``)."""
    digest = hmac.new(key_hash.encode(), b"jetgrid webhook secret v1", hashlib.sha256).digest()
    return SECRET_PREFIX + base64.b64encode(digest).decode()


def _proof_key(secret: str) -> bytes:
    # A key of its own, so a proof is never a valid delivery signature and vice versa.
    return hmac.new(secret_bytes(secret), b"jetgrid submitter proof v1", hashlib.sha256).digest()


def submitter_proof(secret: str, job_id: str, submitter: str, webhook: str) -> str:
    """The proof, under the key whose webhook secret is `secret`, that the holder of that key
    submitted job `job_id` as `submitter` with `webhook`: ``p1,<base64 HMAC-SHA256>``."""
    content = json.dumps(["jetgrid.submitter", job_id, submitter, webhook]).encode()
    digest = hmac.new(_proof_key(secret), content, hashlib.sha256).digest()
    return PROOF_PREFIX + base64.b64encode(digest).decode()


def proof_holds(
    secret: str, proof: str | None, *, job_id: str, submitter: str | None, webhook: str | None
) -> bool:
    """Whether `proof` is `submitter_proof` of exactly this job id, submitter and webhook
    under `secret` (no proof, submitter or webhook: it does not)."""
    if not proof or submitter is None or webhook is None:
        return False
    expected = submitter_proof(secret, job_id, submitter, webhook)
    return hmac.compare_digest(expected.encode(), proof.encode())


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,<base64 HMAC-SHA256 of id.timestamp.body>``."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_bytes(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers, and the content type, of one delivery."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
        "content-type": "application/json",
    }


def verify(
    secret: str,
    received: Mapping[str, str],
    body: bytes,
    *,
    now: int,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
) -> bool:
    """Whether a delivery's headers carry a valid signature of `body` made within
    `tolerance_s` of `now` (what a receiver checks; jetgrid's tests use it)."""
    lower = {k.lower(): v for k, v in received.items()}
    msg_id, stamp = lower.get("webhook-id", ""), lower.get("webhook-timestamp", "")
    if not msg_id or not stamp.isdigit() or abs(now - int(stamp)) > tolerance_s:
        return False
    expected = sign(secret, msg_id, int(stamp), body).encode()
    sent = lower.get("webhook-signature", "").split()
    return any(hmac.compare_digest(expected, s.encode()) for s in sent)


def _host_refused(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return bool(
        addr.is_private
        or addr.is_loopback
        or addr.is_link_local
        or addr.is_multicast
        or addr.is_reserved
        or addr.is_unspecified
        or not addr.is_global
    )


def _refused(url: str, what: str) -> TargetRefused:
    return TargetRefused(
        f"Webhook URL {url!r} points at {what}, which jetgrid does not call; use a public "
        f"address, or let the operator allow such targets with {ALLOW_SETTING}=1."
    )


def check_url(url: str, *, allow_private: bool) -> str:
    """`url` if jetgrid may deliver to it (by its text: scheme, host, literal addresses), else
    TargetRefused naming it and the fix."""
    if len(url) > MAX_URL:
        raise TargetRefused(f"Webhook URL is {len(url)} characters; at most {MAX_URL} are taken.")
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        raise TargetRefused(f"Webhook URL {url!r} is not a valid URL.") from None
    if parts.scheme not in ("http", "https") or not host:
        raise TargetRefused(
            f"Webhook URL {url!r} must be an http:// or https:// URL with a host name."
        )
    if parts.username or parts.password:
        raise TargetRefused(f"Webhook URL {url!r} carries credentials; put none in the URL.")
    if allow_private:
        return url
    if host == "localhost" or host.endswith((".localhost", ".local", ".internal")):
        raise _refused(url, f"the local name {host!r}")
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return url  # a name: its addresses are checked at delivery
    if _host_refused(addr):
        raise _refused(url, f"the non-public address {host}")
    return url


def check_addresses(url: str, addresses: Iterable[str], *, allow_private: bool) -> None:
    """TargetRefused when any address `url`'s host resolved to is not public (unless allowed)."""
    if allow_private:
        return
    seen = list(addresses)
    if not seen:
        raise TargetRefused(f"Webhook URL {url!r} has a host name that resolves to no address.")
    for text in seen:
        addr = ipaddress.ip_address(text.split("%", 1)[0])
        if _host_refused(addr):
            raise _refused(url, f"a host that resolves to the non-public address {text}")


def pinned(url: str, address: str) -> tuple[str, str]:
    """(`url` with its host replaced by the checked `address`, the Host header that names the
    original host): the POST goes to the address that was checked, even if the name would
    resolve elsewhere a moment later (DNS rebinding)."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    ip = address.split("%", 1)[0]
    host = parts.hostname or ""
    target = f"[{ip}]" if ":" in ip else ip
    named = f"[{host}]" if ":" in host else host
    return urlunsplit(parts._replace(netloc=target + port)), named + port


@dataclass(frozen=True, slots=True)
class Outcome:
    """What to do after one delivery attempt: `done` (acknowledged), `retry` after `delay_s`,
    or `give_up` (recorded on the dead-letter path)."""

    action: Literal["done", "retry", "give_up"]
    delay_s: float = 0.0


def delivery_backoff(first_s: float) -> Backoff:
    """DELIVERY's shape from another first delay (setting webhook_retry_s)."""
    return Backoff(first_s=first_s, factor=DELIVERY.factor, max_s=DELIVERY.max_s)


def attempt_outcome(
    attempt: int, status: int | None, *, max_attempts: int, policy: Backoff = DELIVERY
) -> Outcome:
    """After the `attempt`-th delivery (1-based) answered `status` (None: no answer): a 2xx
    is done; anything else is retried with `policy`'s back-off, up to `max_attempts` in all."""
    if status is not None and 200 <= status < 300:
        return Outcome("done")
    if attempt >= max_attempts:
        return Outcome("give_up")
    step = after_failure(policy, attempt)
    if not isinstance(step, TryAgain):  # a policy with limits of its own ends it too
        return Outcome("give_up")
    return Outcome("retry", step.delay_s)


def payload(kind: str, data: Mapping[str, Any], *, timestamp: str) -> bytes:
    """The JSON body of a delivery: ``{"type", "timestamp", "data"}`` as the spec suggests
    (`timestamp` in ISO 8601)."""
    body = {"type": kind, "timestamp": timestamp, "data": dict(data)}
    return json.dumps(body, separators=(",", ":"), default=str).encode()
