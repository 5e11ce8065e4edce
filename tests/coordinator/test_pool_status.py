from __future__ import annotations

from types import SimpleNamespace

import pytest

from jetgrid.coordinator.pool_status import Backlog, WorkerView, fold_workers, pool_status
from jetgrid.coordinator.pools import PoolConfig, Pools, default_pools
from jetgrid.events.workers import ModelInfo

POOLS = default_pools(("fast", "standard", "heavy"), "standard")
NOW = 1000.0


def w(wid: str, *, models=("llama3:8b", "qwen:7b"), loaded=(), ping=NOW - 1, **kw) -> WorkerView:
    return WorkerView(
        worker_id=wid,
        pools=kw.pop("pools", ("standard",)),
        models=models,
        loaded=loaded,
        available=models,
        last_ping_ts=ping,
        interval_s=5.0,
        **kw,
    )


def test_warm_and_cold_workers_per_model() -> None:
    rows = pool_status(
        POOLS,
        [
            Backlog("standard", "llama3:8b", "c1", pending=6, running=2, oldest_ts=NOW - 12),
            Backlog("standard", "qwen:7b", "c2", pending=0),
        ],
        [
            w("a", loaded=("llama3:8b",)),
            w("b", loaded=("qwen:7b",)),
            w("c", loaded=("llama3:8b",), ping=NOW - 16),  # stale: 3 pings missed
            w("d", loaded=("llama3:8b",), gone=True),
        ],
        NOW,
    )
    by = {r.model: r for r in rows}
    llama, qwen = by["llama3:8b"], by["qwen:7b"]
    assert (llama.backlog, llama.running, llama.oldest_wait_s) == (6, 2, 12.0)
    assert (llama.warm_workers, llama.cold_workers) == (["a"], ["b"])
    # ceil(8 / 4) = 2 workers, and the oldest job waited past cold_wait_s (10): online + 1 = 3
    assert llama.suggested_workers == 3
    assert (qwen.backlog, qwen.oldest_wait_s, qwen.suggested_workers) == (0, None, 0)
    assert (qwen.warm_workers, qwen.cold_workers) == (["b"], ["a"])


def test_a_backend_without_models_is_warm_for_what_it_serves() -> None:
    echo = WorkerView("e", pools=("standard",), models=("echo",), last_ping_ts=NOW)
    (row,) = pool_status(POOLS, [], [echo], NOW)
    assert (row.pool, row.model, row.warm_workers, row.cold_workers) == (
        "standard", "echo", ["e"], []
    )  # fmt: skip


@pytest.mark.parametrize(
    ("backlog", "running", "extra", "want"),
    [
        (0, 0, {}, 0),
        (1, 0, {}, 1),
        (9, 0, {}, 3),
        (9, 3, {"scale_jobs_per_worker": 2}, 6),
        (0, 0, {"min_workers": 2}, 2),
    ],
)
def test_suggested_workers(backlog, running, extra, want) -> None:
    pools = Pools((PoolConfig("p", extra=extra),), default="p")
    (row,) = pool_status(pools, [Backlog("p", "m", "c", backlog, running)], [], NOW)
    assert row.suggested_workers == want


def test_fold_workers_keeps_the_latest_word() -> None:
    def hb(wid: str, loaded: list[str]) -> SimpleNamespace:
        return SimpleNamespace(
            worker_id=wid, pools=["standard"], models=["m:1b"], interval_s=1.0, accepting=True,
            in_flight=0, models_loaded=[ModelInfo(name=n) for n in loaded],
            models_available=[ModelInfo(name="m:1b")],
        )  # fmt: skip

    reg = SimpleNamespace(worker_id="a", pools=["standard"], models=["m:1b"])
    views = fold_workers(
        [
            ("registered", 1.0, reg),
            ("heartbeat", 5.0, hb("a", ["m:1b"])),
            ("heartbeat", 3.0, hb("b", [])),
            ("deregistered", 4.0, SimpleNamespace(worker_id="b")),
        ]
    )
    by = {v.worker_id: v for v in views}
    assert by["a"].loaded == ("m:1b",) and by["a"].online(5.5) and by["a"].warm_for("m:1b")
    assert by["b"].gone and not by["b"].online(3.1)


def test_priority_consumers_add_up_to_one_row() -> None:
    from jetgrid.coordinator.pool_status import Backlog, merge_priorities

    rows = merge_priorities(
        [
            Backlog("fast", "m", "pool-fast-m_high", pending=1, oldest_ts=20.0),
            Backlog("fast", "m", "pool-fast-m", pending=3, running=2, oldest_ts=10.0),
            Backlog("fast", "m", "pool-fast-m_low", pending=0),
            Backlog("fast", "other", "pool-fast-other", pending=5),
        ]
    )
    assert rows == [
        Backlog("fast", "m", "pool-fast-m", pending=4, running=2, oldest_ts=10.0),
        Backlog("fast", "other", "pool-fast-other", pending=5),
    ]
