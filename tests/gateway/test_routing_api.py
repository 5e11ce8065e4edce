"""POST /v1/jobs applies the pool/model rules and keeps remote Python functions off HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from jetgrid.coordinator.settings import Settings
from jetgrid.gateway.llm import resolve_model

pytestmark = pytest.mark.integration


@pytest.fixture
async def python_gateway(streams: Settings) -> AsyncIterator[str]:
    """A gateway that accepts kind 'python' (JETGRID_GATEWAY_ALLOW_PYTHON=1)."""
    from jetgrid.gateway.server import serving

    async with serving(streams.replace(gateway_port=0, gateway_allow_python=True)) as url:
        yield url


async def test_a_pool_that_does_not_serve_the_model_is_refused(gateway) -> None:
    async with httpx.AsyncClient(base_url=gateway) as http:
        r = await http.post(
            "/v1/jobs", json={"model": "llama3.1:8b", "prompt": "x", "pool": "fast"}
        )
        ok = await http.post(
            "/v1/jobs?queue_unserved=true", json={"model": "llama3.2:1b", "prompt": "x"}
        )
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["field"] == "pool" and "does not serve model 'llama3.1:8b'" in err["message"]
    assert ok.status_code == 202 and ok.json()["subject"].endswith(".jobs.fast.llama3_2E2_3A1b")


async def test_python_jobs_are_refused_over_http_by_default(gateway) -> None:
    body = {"model": "python", "kind": "python", "input": {"source": "def f(): pass"}}
    async with httpx.AsyncClient(base_url=gateway) as http:
        r = await http.post("/v1/jobs", json=body)
    assert r.status_code == 403 and r.json()["error"]["field"] == "kind"


async def test_python_jobs_go_to_their_own_subject_when_enabled(python_gateway) -> None:
    body = {"model": "python", "kind": "python", "input": {"source": "def f(): pass"}}
    async with httpx.AsyncClient(base_url=python_gateway) as http:
        r = await http.post("/v1/jobs?queue_unserved=true", json={**body, "pool": "heavy"})
        bad = await http.post("/v1/jobs", json={**body, "model": "llama3.2:1b"})
    assert r.status_code == 202 and r.json()["subject"].endswith(".jobs.heavy.python")
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "model"


@pytest.mark.parametrize(
    ("asked", "live", "served"),
    [
        ("echo", {"echo"}, "echo"),
        ("echo:latest", {"echo"}, "echo"),
        ("llama3", {"llama3:latest"}, "llama3:latest"),
        ("llama3:1b", {"llama3:latest"}, None),
        ("registry:5000/m", {"registry:5000/m:latest"}, "registry:5000/m:latest"),
        ("nope", {"echo"}, None),
    ],
)
def test_the_gateway_resolves_a_model_by_the_same_rule(
    asked: str, live: set[str], served: str | None
) -> None:
    assert resolve_model(asked, {m: {"standard"} for m in live}) == served
