"""Schemathesis hooks for the /openapi.json fuzz test: every 4xx must name the problem."""

from __future__ import annotations

import json

import schemathesis


@schemathesis.check
def names_the_problem(ctx, response, case):  # type: ignore[no-untyped-def]
    """A 4xx body is jetgrid's error shape with a non-empty message."""
    if not 400 <= response.status_code < 500:
        return None
    try:
        err = json.loads(response.content)["error"]
    except (ValueError, KeyError, TypeError) as exc:
        raise AssertionError(f"4xx without a JSON error body: {response.content[:200]!r}") from exc
    if not (isinstance(err, dict) and isinstance(err.get("message"), str) and err["message"]):
        raise AssertionError(f"4xx error does not say what is wrong: {err!r}")
    return None


@schemathesis.hook
def before_call(ctx, case, kwargs):  # type: ignore[no-untyped-def]
    """Cap `wait`: a fuzzed model no worker serves would otherwise hold the request 300 s."""
    query = case.query or {}
    try:
        wait = float(query["wait"])
    except (KeyError, TypeError, ValueError):
        return
    if 0.2 < wait <= 300:
        query["wait"] = 0.2
