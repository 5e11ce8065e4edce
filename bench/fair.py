"""Work-conserving tiers, measured: shares at saturation still follow the tier policy, and a model
served only by a tier-`none` worker still completes every job, after the fallback wait.

Setup: a fresh nats-server; in-process workers (the echo backend, no latency) whose tiers are
written into the tiers KV bucket, as the projector would; the fallback wait is the setting
``fallback_wait_s`` (default 5 s: full 5, half 10, tenth 15, none 20 s; coordinator.fallback).

  shares     four workers, tiers full / half / tenth / none, each with base rate --rate jobs/s
             (so at most rate x factor), concurrency 4, all serving `echo`; a backlog larger
             than they can take in --seconds keeps them saturated. Each worker's share of the
             claims is compared with factor / sum(factors); the target is within 5 points.
  none-only  one worker in tier none serves `rare`. --burst jobs at once, then --trickle jobs
             one every --gap s. Every job must complete; the wait (started - submitted) is
             reported. The same with the fallback off (fallback_wait_s 0, tiers as strict as
             before) completes nothing within --strict-timeout s.
  recovery   a none worker (0.1 s a job, 4 slots) serves a backlog alone, by fallback; then a
             full worker (base rate --rate) starts. How long until the none worker stops taking
             (one none wait, 20 s, of the full worker taking at every reading), and who takes
             what after that.

    .venv/bin/python bench/fair.py [--rate 20 --seconds 30 --burst 20 --trickle 5 --gap 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.fallback import fallback_wait
from jetgrid.coordinator.provision import ensure_tiers_bucket, provision_streams
from jetgrid.coordinator.settings import Settings
from jetgrid.coordinator.tiers import DEFAULT_POLICY
from jetgrid.events import JobSubmitted, decode, encode, stream_specs
from jetgrid.events.addressing import Speaker, address
from jetgrid.natsserver import NatsServer
from jetgrid.worker.agent import Worker, WorkerOptions
from jetgrid.worker.backends.echo import EchoBackend

BENCH = Speaker.service("bench")
TIERS = ("full", "half", "tenth", "none")


class Log:
    """Claimed and completed events by job id, with the time they were seen."""

    def __init__(self) -> None:
        self.claimed: dict[str, list[tuple[float, str, bool]]] = {}
        self.completed: dict[str, float] = {}

    async def on_msg(self, msg: Any) -> None:
        ev = decode(msg.data).event
        name = ev.type.rsplit(".", 1)[-1]
        if name == "started":  # the claim (events.lifecycle.JobStarted)
            self.claimed.setdefault(ev.job_id, []).append((time.time(), ev.worker_id, ev.fallback))
        elif name == "completed":
            self.completed.setdefault(ev.job_id, time.time())


async def _setup(url: str, n: int, **extra: Any) -> tuple[Settings, Any, Log]:
    s = Settings(nats_url=url, subject_prefix=f"f{n}", stream_prefix=f"F{n}_", **extra)
    nc = (await Bus.connect(s, name="bench-fair")).nc
    js = nc.jetstream()
    await provision_streams(js, stream_specs(s.subjects, s.streams))
    await ensure_tiers_bucket(js, s.tiers_bucket)
    log = Log()
    await nc.subscribe(s.subjects.job_events(), cb=log.on_msg)
    return s, nc, log


async def _until(cond: Any, limit_s: float) -> bool:
    """Poll `cond` every 50 ms until it holds or `limit_s` pass; whether it held."""
    deadline = time.time() + limit_s
    while not cond():
        if time.time() >= deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def _tier(nc: Any, s: Settings, worker_id: str, tier: str) -> None:
    kv = await nc.jetstream().key_value(s.tiers_bucket)
    value = {"tier": tier, "factor": DEFAULT_POLICY.factor(tier)}
    await kv.put(worker_id, json.dumps(value).encode())


async def _start(
    s: Settings, worker_id: str, model: str, tier: str, latency_s: float = 0.0
) -> tuple[Worker, Any]:
    w = Worker(
        s, WorkerOptions(pool="standard", models=(model,), worker_id=worker_id, concurrency=4),
        EchoBackend(latency_s=latency_s),
    )  # fmt: skip
    task = asyncio.create_task(w.run())
    await asyncio.wait_for(w.ready.wait(), 15)
    await _until(lambda: w.gate.tier == tier, 15)
    return w, task


async def _stop(workers: list[tuple[Worker, Any]]) -> None:
    for w, _ in workers:
        w.stop()
    await asyncio.wait([t for _, t in workers], timeout=20)


async def _submit(nc: Any, s: Settings, job_id: str, model: str) -> float:
    job = JobSubmitted(job_id=job_id, model=model, pool="standard", prompt="hi")
    addr = address(job, s.subjects, BENCH)
    t = time.time()
    await nc.jetstream().publish(
        addr.subject, encode(job, source=BENCH.source, id=addr.msg_id),
        headers={"Nats-Msg-Id": addr.msg_id},
    )  # fmt: skip
    return t


async def shares(url: str, args: argparse.Namespace) -> dict[str, Any]:
    s, nc, log = await _setup(url, 0, pull_rate=args.rate, pull_burst=1.0)
    for tier in TIERS:
        await _tier(nc, s, f"w-{tier}", tier)
    backlog = int(args.rate * 1.6 * args.seconds * 1.5) + 50
    for i in range(backlog):
        await _submit(nc, s, f"s{i}", "echo")
    workers = [await _start(s, f"w-{t}", "echo", t) for t in TIERS]
    t0 = time.time()
    await asyncio.sleep(args.seconds)  # the measurement window: claims seen in it count
    t1 = time.time()
    await _stop(workers)
    await nc.close()
    counts = dict.fromkeys(TIERS, 0)
    spare = dict.fromkeys(TIERS, 0)
    for claims in log.claimed.values():
        for t, wid, fallback in claims:
            if t0 <= t <= t1:
                counts[wid.removeprefix("w-")] += 1
                spare[wid.removeprefix("w-")] += fallback
    total = sum(counts.values())
    factors = [DEFAULT_POLICY.factor(t) for t in TIERS]
    rows = []
    for tier, f in zip(TIERS, factors, strict=True):
        expected = f / sum(factors)
        actual = counts[tier] / total if total else 0.0
        rows.append(
            {"tier": tier, "factor": f, "expected": expected, "actual": actual,
             "jobs": counts[tier], "fallback_takes": spare[tier]}
        )  # fmt: skip
    worst = max(abs(r["actual"] - r["expected"]) for r in rows)
    left = backlog - len(log.claimed)
    return {"rows": rows, "total": total, "worst_gap": worst, "seconds": t1 - t0, "left": left}


async def none_only(url: str, n: int, args: argparse.Namespace, wait_s: float) -> dict[str, Any]:
    s, nc, log = await _setup(url, n, fallback_wait_s=wait_s)
    await _tier(nc, s, "lonely", "none")
    workers = [await _start(s, "lonely", "rare", "none")]
    submitted: dict[str, float] = {}
    for i in range(args.burst):
        submitted[f"b{i}"] = await _submit(nc, s, f"b{i}", "rare")
    for i in range(args.trickle):
        await asyncio.sleep(args.gap)
        submitted[f"t{i}"] = await _submit(nc, s, f"t{i}", "rare")
    limit = args.strict_timeout if wait_s == 0 else 4 * (fallback_wait(
        DEFAULT_POLICY, "none", wait_s) or 0) + 30  # fmt: skip
    await _until(lambda: len(log.completed) >= len(submitted), limit)
    await _stop(workers)
    await nc.close()
    waits = sorted(log.claimed[j][0][0] - t for j, t in submitted.items() if j in log.claimed)
    return {
        "fallback_wait_s": wait_s,
        "none_wait_s": fallback_wait(DEFAULT_POLICY, "none", wait_s),
        "jobs": len(submitted),
        "completed": sum(1 for j in submitted if j in log.completed),
        "fallback_takes": sum(1 for j in submitted for c in log.claimed.get(j, []) if c[2]),
        "wait_min_s": waits[0] if waits else None,
        "wait_p50_s": waits[len(waits) // 2] if waits else None,
        "wait_max_s": waits[-1] if waits else None,
    }


async def recovery(url: str, n: int, args: argparse.Namespace) -> dict[str, Any]:
    """A none worker serves a backlog alone (fallback); then a full worker comes back: how long
    until the none worker stops taking, and what each takes in the --seconds after that."""
    s, nc, log = await _setup(url, n, pull_rate=args.rate, pull_burst=1.0)
    await _tier(nc, s, "w-none", "none")
    await _tier(nc, s, "w-full", "full")
    for i in range(int(args.rate * (args.seconds + 60))):
        await _submit(nc, s, f"r{i}", "echo")
    # 0.1 s a job, 4 slots: the none worker alone takes ~40 jobs/s, the full one 20/s.
    workers = [await _start(s, "w-none", "echo", "none", latency_s=0.1)]
    await _until(
        lambda: any(c[1:] == ("w-none", True) for cs in log.claimed.values() for c in cs), 120
    )
    await asyncio.sleep(5)  # the none worker serves alone for a while
    workers.append(await _start(s, "w-full", "echo", "full"))
    back = time.time()
    wait = fallback_wait(DEFAULT_POLICY, "none", s.fallback_wait_s) or 0.0
    await asyncio.sleep(wait + 2 + args.seconds)
    await _stop(workers)
    await nc.close()
    claims = [c for cs in log.claimed.values() for c in cs]
    last_none = max(t for t, wid, _ in claims if wid == "w-none")
    after = [c for c in claims if c[0] > last_none]
    return {
        "none_wait_s": wait,
        "none_stopped_after_full_back_s": last_none - back,
        "none_fallback_takes": sum(1 for t, wid, f in claims if wid == "w-none" and f),
        "after_seconds": max(c[0] for c in claims) - last_none if after else 0.0,
        "after_full": sum(1 for c in after if c[1] == "w-full"),
        "after_full_fallback": sum(1 for c in after if c[1] == "w-full" and c[2]),
        "after_none": sum(1 for c in after if c[1] == "w-none"),
    }


def _s(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}s"


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rate", type=float, default=20.0, help="base pull rate, jobs/s")
    ap.add_argument("--seconds", type=float, default=30.0, help="saturation window")
    ap.add_argument("--burst", type=int, default=20)
    ap.add_argument("--trickle", type=int, default=5)
    ap.add_argument("--gap", type=float, default=5.0)
    ap.add_argument("--fallback-wait", type=float, default=Settings().fallback_wait_s)
    ap.add_argument("--strict-timeout", type=float, default=30.0)
    ap.add_argument("--json", action="store_true", help="print JSON only")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="jetgrid-bench-fair-") as tmp:
        server = NatsServer(Path(tmp) / "nats", port=0, log_file=Path(tmp) / "nats.log")
        server.start()
        try:
            sat = await shares(server.url, args)
            served = await none_only(server.url, 1, args, args.fallback_wait)
            strict = await none_only(server.url, 2, args, 0.0)
            back = await recovery(server.url, 3, args)
        finally:
            server.stop()
    result = {"shares": sat, "none_only": served, "none_only_strict": strict, "recovery": back}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"shares at saturation: 4 workers, base rate {args.rate:g} jobs/s, "
          f"fallback_wait_s {args.fallback_wait:g}, {sat['seconds']:.1f} s window, "
          f"{sat['total']} claims, {sat['left']} jobs still waiting")  # fmt: skip
    print(f"{'tier':6} {'factor':>6} {'expected':>9} {'actual':>7} {'jobs':>5} {'fallback':>8}")
    for r in sat["rows"]:
        print(f"{r['tier']:6} {r['factor']:>6g} {r['expected']:>9.1%} {r['actual']:>7.1%} "
              f"{r['jobs']:>5} {r['fallback_takes']:>8}")  # fmt: skip
    verdict = "within" if sat["worst_gap"] <= 0.05 else "NOT within"
    print(f"largest gap {sat['worst_gap']:.1%}: {verdict} 5 points of policy")
    print()
    print(f"a model served only by a tier-none worker: {args.burst} jobs at once, then "
          f"{args.trickle} one every {args.gap:g} s")  # fmt: skip
    print(f"{'fallback_wait_s':>15} {'none waits':>10} {'completed':>10} {'fallback':>8} "
          f"{'wait min':>9} {'p50':>8} {'max':>8}")  # fmt: skip
    for r in (served, strict):
        waits = f"{_s(r['wait_min_s']):>9} {_s(r['wait_p50_s']):>8} {_s(r['wait_max_s']):>8}"
        print(f"{r['fallback_wait_s']:>15g} {_s(r['none_wait_s']):>10} "
              f"{r['completed']:>4}/{r['jobs']:<5} {r['fallback_takes']:>8} {waits}")  # fmt: skip
    print()
    print(
        f"a better worker comes back: a none worker served a backlog alone (fallback), then a "
        f"full worker started; the none worker stopped taking "
        f"{back['none_stopped_after_full_back_s']:.1f} s later (its wait: "
        f"{back['none_wait_s']:g} s); in the {back['after_seconds']:.1f} s after, the full "
        f"worker took {back['after_full']} jobs ({back['after_full_fallback']} of them beyond "
        f"its base rate, alone with a backlog), the none worker {back['after_none']}"
    )


if __name__ == "__main__":
    asyncio.run(main())
