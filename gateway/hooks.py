"""What the gateway checks of a webhook URL a caller names, and who the caller is.

A job (`webhook` on POST /v1/jobs) or a batch (``metadata["webhook_url"]`` on POST /v1/batches)
may name a URL; the gateway refuses it with 422 when jetgrid would not call it
(coordinator.webhooks.check_url: not http(s), credentials in it, or a private or loopback target
while `webhook_allow_private` is off) or when nothing could sign it (no API keys and no
`webhook_secret`). The webhook service checks the target again at each delivery.

Every submit path that stores a job calls `prove` last, just before storing it: on a gateway
with keys, a job with a webhook then carries the proof that the caller's key asked for it
(coordinator.webhooks.submitter_proof), without which the webhook service does not sign with
that key's secret.

``GET /v1/webhooks/failures`` lists the caller's deliveries that gave up (newest first): the
records the webhook service keeps on ``<prefix>.invalid.WEBHOOKS``, each marked with its
owner (the API key's owner token), read back by batched direct gets.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from jetgrid.coordinator import webhooks as wh
from jetgrid.coordinator.settings import Settings
from jetgrid.events import InvalidEvent, InvalidMessage, JetgridError, JobSubmitted, decode
from jetgrid.gateway import auth
from jetgrid.gateway.batchstore import owner_token
from jetgrid.gateway.errors import HTTPError

DEAD_STREAM = "WEBHOOKS"  # the token of `<prefix>.invalid.WEBHOOKS` records
OWNER_HEADER = "jetgrid-owner"  # a record's owner token
SCAN = 4096  # records one listing reads back at most
CHUNK = 256


def check_webhook(settings: Settings, request: Request, url: str, field: str = "webhook") -> str:
    """`url` if jetgrid may deliver to it for this caller, else 422 naming it and the fix."""
    try:
        wh.check_url(url, allow_private=settings.webhook_allow_private)
    except wh.TargetRefused as exc:
        raise HTTPError(422, str(exc), field=field) from None
    if request.scope.get(auth.SCOPE_KEY) is None and settings.webhook_secret is None:
        raise HTTPError(
            422,
            f"This gateway has no API keys and no webhook secret, so it cannot sign a webhook "
            f"to {url!r}; set JETGRID_WEBHOOK_SECRET (whsec_...) or add an API key.",
            field=field,
        )
    return url


def prove(request: Request, job: JobSubmitted) -> JobSubmitted:
    """`job` with `webhook_proof` set when it names a webhook and the caller has an API key (the
    proof is over the job's id, its submitter and its webhook, so set those first)."""
    key: auth.ApiKey | None = request.scope.get(auth.SCOPE_KEY)
    if key is None or job.webhook is None or job.submitter is None:
        return job
    proof = wh.submitter_proof(wh.key_secret(key.hash), job.job_id, job.submitter, job.webhook)
    return job.model_copy(update={"webhook_proof": proof})


def _owner(request: Request) -> str:
    key: auth.ApiKey | None = request.scope.get(auth.SCOPE_KEY)
    return owner_token(key.hash if key is not None else "")


def _shown(env: Any, rec: InvalidMessage) -> dict[str, Any]:
    try:
        body: Any = json.loads(rec.original)
    except ValueError:
        body = None
    return {
        "webhook_id": rec.headers.get("webhook-id"),
        "url": rec.subject,
        "reason": rec.reason,
        "recorded_at": env.time.isoformat(),
        "body": body,
    }


async def failures(request: Request) -> Response:
    """The caller's webhook deliveries that gave up, newest first (``?limit=`` 1-100)."""
    gw = request.app.state.gateway
    raw = request.query_params.get("limit", "20")
    if not raw.isdigit() or not 1 <= int(raw) <= 100:
        raise HTTPError(422, f"Query parameter 'limit' must be 1-100, got {raw!r}.", field="limit")
    limit, owner = int(raw), _owner(request)
    stream = gw.settings.streams.invalid
    subject = gw.settings.subjects.invalid(DEAD_STREAM)
    out: list[dict[str, Any]] = []
    try:
        hi = await gw.bus.last_seq(stream)
        low_end = max(1, hi - SCAN + 1)
        while hi >= low_end and len(out) < limit:
            lo = max(low_end, hi - CHUNK + 1)
            msgs = await gw.bus.messages(stream, seq=lo, subject=subject, up_to_seq=hi, limit=CHUNK)
            for m in reversed(msgs):
                try:
                    env = decode(m.data)
                except InvalidEvent:
                    continue
                rec = env.event
                if isinstance(rec, InvalidMessage) and rec.headers.get(OWNER_HEADER) == owner:
                    out.append(_shown(env, rec))
            hi = lo - 1
    except JetgridError as exc:
        raise HTTPError(503, f"Could not read the webhook records from NATS: {exc}") from exc
    return JSONResponse({"object": "list", "data": out[:limit]})


routes = [Route("/v1/webhooks/failures", failures, methods=["GET"])]
