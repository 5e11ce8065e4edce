from __future__ import annotations

import pytest

from jetgrid.coordinator.pools import PoolConfig, Pools, default_pools
from jetgrid.coordinator.routing import RouteError, full_model_name, route_job, serves

POOLS = default_pools(("fast", "standard", "heavy"), "standard")
STRICT = Pools(
    (PoolConfig("small", models=("*:1b",)), PoolConfig("big", models=("*:70b", "mistral*"))),
    default="big",
)


@pytest.mark.parametrize(
    ("pools", "pool", "model", "ok"),
    [
        (POOLS, "fast", "llama3.2:1b", True),  # a pattern matches
        (POOLS, "fast", "llama3.1:8b", False),  # fast has patterns, none match
        (POOLS, "heavy", "llama3.2:1b", False),
        (POOLS, "standard", "llama3.1:70b", True),  # no patterns: a catch-all pool
        (POOLS, "standard", "echo", True),
        (POOLS, "nope", "echo", False),  # unknown pool
        (STRICT, "big", "qwen:7b", True),  # matches nothing anywhere: the default takes it
        (STRICT, "small", "qwen:7b", False),
        (STRICT, "big", "llama3.2:1b", False),  # belongs to small, big has patterns
        (STRICT, "big", "mistral:7b", True),
    ],
)
def test_serves(pools: Pools, pool: str, model: str, ok: bool) -> None:
    assert serves(pools, pool, model) is ok


@pytest.mark.parametrize(
    ("model", "kind", "pool", "expected"),
    [
        ("llama3.2:1b", "generate", None, "fast"),
        ("llama3.1:70b", "chat", None, "heavy"),
        ("llama3.1:8b", "embed", "standard", "standard"),
        ("python", "python", None, "standard"),
        ("python", "python", "heavy", "heavy"),  # any pool may run python functions
    ],
)
def test_route_job(model: str, kind: str, pool: str | None, expected: str) -> None:
    assert route_job(POOLS, model=model, kind=kind, pool=pool) == expected


@pytest.mark.parametrize(
    ("model", "kind", "pool", "field", "says"),
    [
        ("llama3.1:8b", "generate", "fast", "pool", "does not serve model 'llama3.1:8b'"),
        ("llama3.1:8b", "generate", "fast", "pool", "goes to 'standard'"),
        ("echo", "generate", "gpu", "pool", "unknown pool 'gpu'"),
        ("echo", "python", None, "model", "python jobs use the model 'python'"),
        ("python", "generate", None, "model", "reserved"),
        ("python", "python", "gpu", "pool", "unknown pool"),
    ],
)
def test_refusals_name_the_field(model, kind, pool, field, says) -> None:
    with pytest.raises(RouteError) as err:
        route_job(POOLS, model=model, kind=kind, pool=pool)
    assert err.value.field == field and says in str(err.value)


@pytest.mark.parametrize(
    ("name", "full"),
    [
        ("llama3", "llama3:latest"),
        ("llama3:latest", "llama3:latest"),
        ("llama3.2:1b", "llama3.2:1b"),
        ("library/llama3", "library/llama3:latest"),
        ("registry:5000/team/m", "registry:5000/team/m:latest"),  # a port is not a tag
        ("registry:5000/team/m:q4", "registry:5000/team/m:q4"),
    ],
)
def test_a_model_without_a_tag_is_its_latest(name: str, full: str) -> None:
    assert full_model_name(name) == full
