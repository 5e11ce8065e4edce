"""Malformed bodies on every POST route (jetgrid's, Ollama's, OpenAI's): a 4xx in the route's own
error shape that names the problem, never a 5xx.

The fixed cases are the bodies that gave 500/503 before the codec bounded what it reads; the
property-based part (bounded, fixed seed) generates more against a live gateway and an echo
worker, so a body that happens to be valid runs and completes.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

pytestmark = [pytest.mark.integration]

ROUTES = {
    "/v1/jobs": {"model": "echo", "pool": "default", "prompt": "hi"},
    "/api/generate": {"model": "echo", "prompt": "hi", "stream": False},
    "/api/chat": {
        "model": "echo",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": False,
    },
    "/api/embed": {"model": "echo", "input": "hi"},
    "/api/show": {"model": "echo"},
    "/v1/chat/completions": {"model": "echo", "messages": [{"role": "user", "content": "hi"}]},
    "/v1/completions": {"model": "echo", "prompt": "hi"},
    "/v1/embeddings": {"model": "echo", "input": "hi"},
    "/api/embeddings": {"model": "echo", "prompt": "hi"},
}
FIELDS = {  # the field of each route's body that carries text, for the lone surrogate
    "/v1/jobs": "prompt",
    "/api/generate": "prompt",
    "/api/chat": "messages",
    "/api/embed": "input",
    "/api/show": "model",
    "/v1/chat/completions": "messages",
    "/v1/completions": "prompt",
    "/v1/embeddings": "input",
    "/api/embeddings": "prompt",
}


def deep(n: int) -> bytes:
    return b'{"model": "echo", "prompt": ' + b"[" * n + b"]" * n + b"}"


def with_field(path: str, raw_value: str) -> bytes:
    body = dict(ROUTES[path])
    key = FIELDS[path]
    body[key] = "@@"
    return json.dumps(body).replace('"@@"', raw_value).encode()


def fixed_cases(path: str) -> list[bytes]:
    return [
        deep(1000),
        deep(500),
        b"[" * 100_000,
        with_field(path, '"\\ud800"'),  # a lone surrogate, escaped
        with_field(path, '[{"role": "user", "content": "\\udfff"}]'),
        with_field(path, "1e999"),
        with_field(path, "NaN"),
        with_field(path, "9" * 5000),
        with_field(path, "123456789012345678901234567890"),
        with_field(path, '{"a": {"b": 1}}'),
        b'{"model": 5, "prompt": true, "messages": "x", "input": {"x": 1}}',
        b"[1, 2, 3]",
        b'"just a string"',
        b"null",
        b"\xff\xfe",
        b'{"model": "echo", "prompt": "\xed\xa0\x80"}',  # a surrogate as UTF-8 bytes
        b"",
    ]


def check(path: str, resp: httpx.Response, body: bytes) -> None:
    where = f"POST {path} with {body[:80]!r}"
    assert resp.status_code < 500, f"{where}: {resp.status_code} {resp.text[:300]}"
    if resp.status_code < 400:
        return
    err = resp.json()["error"]
    if path.startswith("/api/"):  # Ollama's shape: a flat string
        assert isinstance(err, str) and err, where
    else:  # jetgrid's and OpenAI's shape
        assert isinstance(err["message"], str) and err["message"], where
        assert "Traceback" not in err["message"], where


async def test_malformed_bodies_are_4xx_on_every_route(echo_gateway: str) -> None:
    async with httpx.AsyncClient(base_url=echo_gateway, timeout=30) as http:
        for path in ROUTES:
            for body in fixed_cases(path):
                resp = await http.post(
                    path, content=body, headers={"content-type": "application/json"}
                )
                check(path, resp, body)
                if body.startswith(b'{"model": "echo", "prompt": [[') or body == b"[" * 100_000:
                    assert resp.status_code == 400, (path, resp.text)
                    assert "nests deeper than 32" in resp.text


LEAVES = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8))
VALUES = st.recursive(
    LEAVES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)
KEYS = ["model", "prompt", "messages", "input", "options", "stream", "max_tokens", "temperature",
        "priority", "pool", "tools", "format", "keep_alive", "raw"]  # fmt: skip


@st.composite
def hostile_body(draw: st.DrawFn, path: str) -> bytes:
    base: dict[str, Any] = dict(ROUTES[path])
    for key in draw(st.lists(st.sampled_from(sorted(base)), unique=True)):
        del base[key]
    extra = draw(st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=4))
    base.update(extra)
    text = json.dumps(base)  # floats may come out as NaN / Infinity: hostile on purpose
    odd = draw(st.sampled_from(["", '"\\ud800"', "1e999", "9" * 30, "[" * 40 + "]" * 40]))
    if odd and text != "{}":
        text = text[:-1] + f', "odd": {odd}}}'
    return text.encode()


def fuzz(base: str) -> dict[str, int]:
    """Run the generated bodies against the gateway (in a thread: the gateway shares the loop)."""
    tried: dict[str, int] = {}
    with httpx.Client(base_url=base, timeout=30) as http:

        def route(path: str) -> None:
            @seed(11)
            @settings(
                max_examples=40,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(body=hostile_body(path))
            def one(body: bytes) -> None:
                tried[path] = tried.get(path, 0) + 1
                resp = http.post(path, content=body, headers={"content-type": "application/json"})
                check(path, resp, body)

            one()

        for path in ROUTES:
            route(path)
    return tried


async def test_generated_bodies_are_never_5xx(echo_gateway: str) -> None:
    tried = await asyncio.to_thread(fuzz, echo_gateway)
    print(f"generated bodies per route: {tried}")
    assert all(n >= 20 for n in tried.values()), tried
