"""Pool status, pure: rows per (pool, model) from backlogs and worker views at a time."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from jetgrid.coordinator.backlog import Backlog
from jetgrid.coordinator.pools import PoolConfig, Pools, default_pools
from jetgrid.events import Envelope, WorkerDeregistered, WorkerHeartbeat, WorkerRegistered
from jetgrid.events.workers import ModelInfo
from jetgrid.projections.pools import pool_status, pools_json, served_within
from jetgrid.projections.workers import WorkerView, apply

POOLS = default_pools(("fast", "standard", "heavy"), "standard")
NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
OLDEST = NOW.timestamp() - 12  # epoch seconds of the oldest waiting job
_ids = itertools.count()


def _env(event: WorkerRegistered | WorkerHeartbeat | WorkerDeregistered, age_s: float) -> Envelope:
    t = NOW - timedelta(seconds=age_s)
    return Envelope(id=f"e{next(_ids)}", source="t", time=t, event=event)


def worker(
    wid: str,
    *,
    models: tuple[str, ...] = ("llama3:8b", "qwen:7b"),
    loaded: tuple[str, ...] = (),
    available: tuple[str, ...] | None = None,
    age: float = 1.0,
    pools: tuple[str, ...] = ("standard",),
    accepting: bool = True,
    gone: bool = False,
    tier_factor: float | None = None,
) -> WorkerView:
    """A worker registered before its one ping, `age` seconds before NOW (interval 5 s)."""
    reg = WorkerRegistered(
        worker_id=wid, pools=list(pools), models=list(models), backend="ollama", concurrency=1,
        heartbeat_interval_s=5.0,
    )  # fmt: skip
    ping = WorkerHeartbeat(
        worker_id=wid, n=1, healthy=True, interval_s=5.0, in_flight=0, accepting=accepting,
        tier_factor=tier_factor,
        models_loaded=[ModelInfo(name=m) for m in loaded],
        models_available=[ModelInfo(name=m) for m in (models if available is None else available)],
    )  # fmt: skip
    view = apply(apply(None, _env(reg, age + 1)), _env(ping, age))
    if gone:
        view = apply(view, _env(WorkerDeregistered(worker_id=wid), age - 0.5))
    return view


def test_warm_and_cold_workers_per_model() -> None:
    rows = pool_status(
        POOLS,
        [
            Backlog("standard", "llama3:8b", "c1", pending=6, running=2, oldest_ts=OLDEST),
            Backlog("standard", "qwen:7b", "c2", pending=0),
        ],
        [
            worker("a", loaded=("llama3:8b",)),
            worker("b", loaded=("qwen:7b",)),
            worker("c", loaded=("llama3:8b",), age=16),  # stale (3 pings missed): still live
            worker("d", loaded=("llama3:8b",), age=26),  # offline: over 5 intervals
            worker("e", loaded=("llama3:8b",), gone=True),  # deregistered
            worker("f", loaded=("llama3:8b",), accepting=False),  # backend unreachable
        ],
        NOW,
    )
    by = {r.model: r for r in rows}
    llama, qwen = by["llama3:8b"], by["qwen:7b"]
    assert (llama.backlog, llama.running, llama.oldest_wait_s) == (6, 2, 12.0)
    assert (llama.warm_workers, llama.cold_workers) == (["a", "c"], ["b"])
    # ceil(8 / 4) = 2 workers, and the oldest job waited past cold_wait_s (10): 3 serve + 1 = 4
    assert llama.suggested_workers == 4
    assert (qwen.backlog, qwen.oldest_wait_s, qwen.suggested_workers) == (0, None, 0)
    assert (qwen.warm_workers, qwen.cold_workers) == (["b"], ["a", "c"])
    assert (llama.consumer, qwen.consumer) == ("c1", "c2")


def test_a_backend_without_models_is_warm_for_what_it_serves() -> None:
    echo = worker("e", models=("echo",), available=())
    (row,) = pool_status(POOLS, [], [echo], NOW)
    assert (row.pool, row.model, row.warm_workers, row.cold_workers) == (
        "standard", "echo", ["e"], []
    )  # fmt: skip
    assert row.consumer is None


def test_model_names_without_a_tag_mean_latest() -> None:
    w = worker("a", models=("llama3",), loaded=("llama3:latest",))
    (row,) = pool_status(POOLS, [Backlog("standard", "llama3:latest", "c", pending=1)], [w], NOW)
    assert row.warm_workers == ["a"]


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
def test_suggested_workers(backlog: int, running: int, extra: dict[str, float], want: int) -> None:
    pools = Pools((PoolConfig("p", extra=extra),), default="p")
    (row,) = pool_status(pools, [Backlog("p", "m", "c", backlog, running)], [], NOW)
    assert row.suggested_workers == want


def test_pools_json_lists_every_pool_with_its_rows() -> None:
    rows = pool_status(
        POOLS,
        [Backlog("fast", "tiny:1b", "pool-fast-tiny_1b", pending=3, running=1, waiting_pulls=2)],
        [worker("a", models=("tiny:1b",), pools=("fast",), loaded=("tiny:1b",))],
        NOW,
    )
    doc = pools_json(POOLS, rows)
    assert [p["name"] for p in doc["pools"]] == ["fast", "standard", "heavy"]
    fast = doc["pools"][0]
    assert (fast["models"], fast["backlog"]) == (["tiny:1b"], 3)
    assert fast["consumers"] == [
        {
            "pool": "fast", "model": "tiny:1b", "consumer": "pool-fast-tiny_1b", "backlog": 3,
            "ack_pending": 1, "waiting_pulls": 2, "workers": 1, "running": 1,
            "oldest_wait_s": None, "warm_workers": ["a"], "cold_workers": [],
            "suggested_workers": 1, "unserved": 0, "held_back_workers": [], "held_back_jobs": 0,
        }
    ]  # fmt: skip
    assert doc["pools"][1]["consumers"] == [] and doc["pools"][1]["backlog"] == 0


def test_cli_rows_keep_their_fields() -> None:
    (row,) = pool_status(POOLS, [Backlog("fast", "m", "c", pending=1)], [], NOW)
    assert {
        "pool", "model", "backlog", "running", "oldest_wait_s", "warm_workers", "cold_workers",
        "suggested_workers",
    } <= set(row.to_json())  # fmt: skip


def test_jobs_that_wait_on_workers_held_back_by_their_tier_are_counted() -> None:
    backlogs = [
        Backlog("standard", "llama3:8b", "c1", pending=5, oldest_ts=OLDEST),
        Backlog("standard", "qwen:7b", "c2", pending=3, oldest_ts=OLDEST),
    ]
    lone = worker("lone", models=("llama3:8b",), tier_factor=0.0)
    rows = pool_status(POOLS, backlogs, [lone], NOW)
    llama = next(r for r in rows if r.model == "llama3:8b")
    assert (llama.held_back_workers, llama.held_back_jobs) == (["lone"], 5)
    qwen = next(r for r in rows if r.model == "qwen:7b")  # no worker at all: not held back
    assert (qwen.held_back_workers, qwen.held_back_jobs) == ([], 0)
    # A worker that may pull (factor above 0, or not said yet) serves too: nothing held back.
    for other in (worker("ok", tier_factor=0.1), worker("new")):
        rows = pool_status(POOLS, backlogs, [lone, other], NOW)
        llama = next(r for r in rows if r.model == "llama3:8b")
        assert (llama.held_back_workers, llama.held_back_jobs) == (["lone"], 0)
    doc = pools_json(POOLS, pool_status(POOLS, backlogs, [lone], NOW))
    (standard,) = [p for p in doc["pools"] if p["name"] == "standard"]
    assert standard["held_back_jobs"] == 5
    row = next(c for c in standard["consumers"] if c["model"] == "llama3:8b")
    assert (row["held_back_workers"], row["held_back_jobs"]) == (["lone"], 5)


def test_the_cli_table_shows_held_back_workers_and_the_jobs_that_wait_on_them() -> None:
    from jetgrid.cli.pools import render

    lone = worker("lone", models=("llama3:8b",), tier_factor=0.0)
    rows = pool_status(POOLS, [Backlog("standard", "llama3:8b", "c1", pending=5)], [lone], NOW)
    text = render(rows)
    header, line = text.splitlines()[:2]
    assert header.split()[-2:] == ["HELD-BACK", "WAIT-ON-TIER"]
    assert line.split()[-3:] == ["1", "(lone)", "5"]
    assert "5 job(s) wait on workers held back by their tier" in text
    assert "held back" not in render(pool_status(POOLS, [], [worker("a")], NOW))


def test_jobs_for_a_model_no_consumer_takes_are_rows_of_unserved_backlog() -> None:
    stored = {("fast", "ghost:1b"): 2, ("fast", "tiny:1b"): 9, ("standard", "m"): 1}
    stored |= {("standard", "m:latest"): 2, ("heavy", "none"): 0}
    rows = pool_status(
        POOLS,
        [Backlog("fast", "tiny:1b", "c", pending=4)],  # a consumer: its own backlog counts
        [worker("a", models=("m",), loaded=("m",))],
        NOW,
        stored,
    )
    got = {(r.pool, r.model): (r.backlog, r.unserved, r.consumer) for r in rows}
    assert got == {
        ("fast", "ghost:1b"): (2, 2, None),  # nobody serves it: all of it is unserved
        ("fast", "tiny:1b"): (4, 4, "c"),  # a consumer but no live worker
        ("standard", "m"): (3, 0, None),  # `m` and `m:latest` are one row; a live worker
    }
    doc = pools_json(POOLS, rows)
    assert [(p["name"], p["unserved"]) for p in doc["pools"]] == [
        ("fast", 6), ("standard", 0), ("heavy", 0)
    ]  # fmt: skip
    ghost = pool_status(POOLS, [], [], NOW, {("fast", "ghost:1b"): 2})[0]
    assert ghost.suggested_workers == 1  # the autoscaling signal asks for a worker


@pytest.mark.parametrize(
    ("view", "pool", "model", "window_s", "served"),
    [
        (worker("a", models=("m",)), "standard", "m", 0.0, True),  # live
        (worker("a", models=("m",)), "standard", "m:latest", 0.0, False),  # another subject
        (worker("a", models=("m",)), "fast", "m", 600.0, False),  # another pool
        (worker("a", models=("m",)), "standard", "n", 600.0, False),  # another model
        (worker("a", models=("m",), age=300), "standard", "m", 600.0, True),  # gone a while
        (worker("a", models=("m",), age=300), "standard", "m", 0.0, False),
        (worker("a", models=("m",), age=900), "standard", "m", 600.0, False),
        (worker("a", models=("m",), age=10, gone=True), "standard", "m", 600.0, True),
        (worker("a", models=("m",), age=10, gone=True), "standard", "m", 5.0, False),
    ],
)
def test_a_model_is_served_by_a_live_worker_or_one_heard_within_the_window(
    view: WorkerView, pool: str, model: str, window_s: float, served: bool
) -> None:
    assert served_within([view], pool, model, NOW, window_s) is served


def test_no_workers_serve_nothing() -> None:
    assert served_within([], "standard", "m", NOW, 1e9) is False
