"""Price tables: what usage costs, applied at report time to any past period.

A prices file (TOML) gives default prices and per-model overrides; a model's table replaces
the defaults it names::

    currency = "USD"
    per_gpu_second = 0.0004   # per GPU-second (projections.usage)
    per_kj = 0.00005          # per kilojoule of GPU energy
    per_1k_tokens = 0.0

    [model."llama3.1:70b"]
    per_1k_tokens = 0.002

The cost of a total is the sum over its models of ``gpu_s * per_gpu_second + energy_j / 1000
* per_kj + tokens / 1000 * per_1k_tokens``. The log stores only what was used, never a price,
so a new table prices any period again.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jetgrid.events import ConfigError
from jetgrid.projections.usage import Total

__all__ = ["Prices", "Rate", "load_prices", "parse_prices"]

_FIELDS = ("per_gpu_second", "per_kj", "per_1k_tokens")


@dataclass(frozen=True, slots=True)
class Rate:
    per_gpu_second: float = 0.0
    per_kj: float = 0.0
    per_1k_tokens: float = 0.0

    def cost(self, gpu_s: float, energy_j: float, tokens: int) -> float:
        return (
            gpu_s * self.per_gpu_second
            + energy_j / 1000 * self.per_kj
            + tokens / 1000 * self.per_1k_tokens
        )


@dataclass(frozen=True, slots=True)
class Prices:
    default: Rate = Rate()
    models: dict[str, Rate] = field(default_factory=dict)
    currency: str = ""

    def rate(self, model: str) -> Rate:
        return self.models.get(model, self.default)

    def cost(self, total: Total) -> float:
        """What `total` costs: each of its models at that model's rate."""
        return sum(self.rate(m).cost(*used) for m, used in total.by_model.items())


def _rate(raw: dict[str, Any], base: Rate, where: str) -> Rate:
    unknown = sorted(set(raw) - set(_FIELDS))
    if unknown:
        raise ConfigError(f"{where}: unknown price {unknown[0]!r}; use one of {list(_FIELDS)}.")
    values = {}
    for k in _FIELDS:
        v = raw.get(k, getattr(base, k))
        if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
            raise ConfigError(f"{where}: {k} has value {v!r}; give a number >= 0.")
        values[k] = float(v)
    return Rate(**values)


def parse_prices(text: str, where: str = "prices file") -> Prices:
    """Prices from the TOML text of a prices file; ConfigError says what is wrong."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where} is not valid TOML: {exc}.") from None
    models = data.pop("model", {})
    currency = data.pop("currency", "")
    if not isinstance(models, dict) or not isinstance(currency, str):
        raise ConfigError(f'{where}: [model."NAME"] must be tables and currency a string.')
    default = _rate(data, Rate(), where)
    rates = {}
    for name, raw in models.items():
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: model {name!r} must be a table of prices.")
        rates[name] = _rate(raw, default, f"{where}, model {name!r}")
    return Prices(default, rates, currency)


def load_prices(path: Path) -> Prices:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"Cannot read prices file {str(path)!r}: {exc.strerror}.") from None
    return parse_prices(text, where=f"prices file {str(path)!r}")


def report(totals: list[Total], by: str, prices: Prices | None) -> list[dict[str, Any]]:
    """`totals` as JSON-able rows (with ``cost`` when `prices` are given): the one shape that
    `jetgrid usage --json` and ``GET /v1/usage`` answer with."""
    rows = []
    for t in totals:
        row: dict[str, Any] = {
            by: t.name,
            "jobs": t.jobs,
            "runs": t.runs,
            "run_s": round(t.run_s, 6),
            "gpu_s": round(t.gpu_s, 6),
            "energy_j": round(t.energy_j, 3),
            "energy_unknown_runs": t.energy_unknown,
            "tokens": t.tokens,
        }
        if prices is not None:
            row["cost"] = round(prices.cost(t), 9)
            row["currency"] = prices.currency
        rows.append(row)
    return rows
