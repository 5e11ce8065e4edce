"""Which pool a job goes to, and which pool/model pairs are refused. Pure rules.

- A job without a pool goes to the first pool whose model patterns match its model, else to
  the default pool (`Pools.route`).
- A job naming a pool must name one that *serves* its model. A pool serves a model when one of
  its patterns matches it, when it has no patterns at all (a catch-all pool, like the default
  ``standard``), or when the model matches no pool's patterns and the pool is the default
  (where such a model would be routed anyway). Anything else is refused with an error that
  names the pool's patterns and where the model would go.
- Remote Python functions (kind ``python``) use the model token ``python``: they are submitted
  to ``<prefix>.jobs.<pool>.python`` and any pool may take them (the pool picks the hardware,
  only workers started with ``--allow-python`` bind that consumer). Their model must be
  ``python`` and nothing else may use that name.
"""

from __future__ import annotations

from dataclasses import dataclass

from jetgrid.coordinator.pools import Pools

PYTHON_MODEL = "python"


@dataclass
class RouteError(ValueError):
    """A job cannot go where it asked; `field` is the request field at fault."""

    field: str
    message: str

    def __str__(self) -> str:
        return self.message


def full_model_name(model: str) -> str:
    """Ollama's tag rule: a name without a tag means ``:latest``, so ``llama3`` and
    ``llama3:latest`` are one model (a registry's port, ``host:5000/m``, is not a tag)."""
    return model if ":" in model.rsplit("/", 1)[-1] else f"{model}:latest"


def serves(pools: Pools, pool: str, model: str) -> bool:
    """Whether `pool` takes jobs for `model` (see the module docstring)."""
    cfg = pools.get(pool)
    if cfg is None:
        return False
    return not cfg.models or cfg.matches(model) or pools.route(model) == pool


def route_job(pools: Pools, *, model: str, kind: str = "generate", pool: str | None = None) -> str:
    """The pool a job goes to; raises RouteError when it names one that cannot take it."""
    if (kind == "python") != (model == PYTHON_MODEL):
        if kind == "python":
            msg = f"field 'model': python jobs use the model {PYTHON_MODEL!r}, got {model!r}."
        else:
            msg = f"field 'model': {PYTHON_MODEL!r} is reserved for jobs of kind 'python'."
        raise RouteError("model", msg)
    if pool is None:
        return pools.default if kind == "python" else pools.route(model)
    if pools.get(pool) is None:
        raise RouteError(
            "pool", f"field 'pool': unknown pool {pool!r}; this deployment has {list(pools.names)}."
        )
    if kind == "python" or serves(pools, pool, model):
        return pool
    cfg = pools[pool]
    raise RouteError(
        "pool",
        f"field 'pool': pool {pool!r} does not serve model {model!r} (its models: "
        f"{list(cfg.models)}); leave 'pool' out and it goes to {pools.route(model)!r}.",
    )
