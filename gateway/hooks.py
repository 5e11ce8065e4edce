"""What the gateway checks of a webhook URL a caller names, and who the caller is.

A job (`webhook` on POST /v1/jobs) or a batch (``metadata["webhook_url"]`` on POST /v1/batches)
may name a URL; the gateway refuses it with 422 when jetgrid would not call it
(coordinator.webhooks.check_url: not http(s), credentials in it, or a private or loopback target
while `webhook_allow_private` is off) or when nothing could sign it (no API keys and no
`webhook_secret`). The webhook service checks the target again at each delivery.
"""

from __future__ import annotations

from starlette.requests import Request

from jetgrid.coordinator import webhooks as wh
from jetgrid.coordinator.settings import Settings
from jetgrid.gateway import auth
from jetgrid.gateway.errors import HTTPError


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


def submitter(request: Request) -> str | None:
    """Who submits: the caller's API key name when keys are on (a caller cannot speak for
    another key, whose webhook secret would sign), else the X-Jetgrid-Submitter header."""
    key: auth.ApiKey | None = request.scope.get(auth.SCOPE_KEY)
    return key.name if key is not None else request.headers.get("x-jetgrid-submitter")
