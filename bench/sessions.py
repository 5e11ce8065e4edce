"""Cache affinity, measured: time to first token of multi-turn chats with affinity lanes against
plain pooling, and the throughput of each, in one run on this machine.

Setup: a fresh nats-server; --workers workers, each with its own fake Ollama
(tests/backends/fake_ollama.py) whose prompt evaluation costs --prompt-token-s per word outside
its prefix cache (the word sequences of its last 16 requests: a server's KV cache), and
--token-s per generated word. --sessions conversations run at once, each --turns turns, each
turn sent --think seconds (a person reading and typing; spread evenly over 0.5x-1.5x) after
the previous answer is in: a system prompt of --system words, then user
messages of --words words (the fake answers with the same words, which the next turn carries
as the assistant's message). Every job goes to one fair-share pool, tenant `bench`.

  affinity  the pool has affinity lanes (coordinator.share): a conversation's turns go to the
            worker that served its lane, whose cache holds the conversation so far
  plain     the same pool without lanes: any worker takes any turn

Time to first token = the queue wait (submit to the worker's claim or start event) plus the
prompt evaluation the fake Ollama reports. Targets (issue 15): affinity's mean TTFT at least
40% lower than plain pooling's, with no loss of throughput (turns per second).

    .venv/bin/python bench/sessions.py [--workers 3 --sessions 12 --turns 5]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.pools import PoolConfig
from jetgrid.coordinator.provision import provision_streams
from jetgrid.coordinator.settings import Settings
from jetgrid.coordinator.share import queue_lane
from jetgrid.events import JobSubmitted, decode, encode, stream_specs
from jetgrid.events.addressing import Speaker, address
from jetgrid.natsserver import NatsServer
from jetgrid.worker.agent import Worker, WorkerOptions
from jetgrid.worker.backends.ollama import OllamaBackend

ROOT = Path(__file__).resolve().parent.parent
BENCH = Speaker.service("bench")
MODEL = "m:1b"


def _fake_module() -> Any:
    path = ROOT / "tests" / "backends" / "fake_ollama.py"
    spec = importlib.util.spec_from_file_location("bench_fake_ollama", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_fake_ollama"] = mod
    spec.loader.exec_module(mod)
    return mod


def p95(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=20)[18] if len(xs) >= 20 else max(xs)


async def scenario(
    url: str, n: int, name: str, args: argparse.Namespace, fake: Any, tmp: Path
) -> dict[str, Any]:
    extra: dict[str, Any] = {"fair_share": True}
    if name == "affinity":
        extra.update(affinity_lanes=args.lanes, affinity_wait_s=args.affinity_wait)
    pools = tmp / f"pools-{n}.toml"
    pools.write_text(
        '[[pool]]\nname = "standard"\nack_wait_s = 60\n'
        + "".join(f"{k} = {json.dumps(v)}\n" for k, v in extra.items())
    )
    pool = PoolConfig("standard", extra=extra)
    s = Settings(nats_url=url, subject_prefix=f"s{n}", stream_prefix=f"S{n}_", pools_file=pools,
                 heartbeat_interval_s=1.0)  # fmt: skip
    nc = (await Bus.connect(s, name="bench-sessions")).nc
    js = nc.jetstream()
    await provision_streams(js, stream_specs(s.subjects, s.streams))
    servers, workers, tasks = [], [], []
    for i in range(args.workers):
        srv = fake.FakeOllama(prompt_token_s=args.prompt_token_s, token_delay_s=args.token_s)
        srv.add(MODEL, loaded=True)
        await srv.start()
        servers.append(srv)
        w = Worker(
            s, WorkerOptions(pool="standard", models=(MODEL,), worker_id=f"w{i}",
                             concurrency=args.slots), OllamaBackend(srv.url, [MODEL]),
        )  # fmt: skip
        workers.append(w)
        tasks.append(asyncio.create_task(w.run()))
    for w in workers:
        await asyncio.wait_for(w.ready.wait(), 30)

    taken: dict[str, float] = {}
    done: dict[str, asyncio.Future[Any]] = {}

    async def on_event(msg: Any) -> None:
        _, ev = s.subjects.parse_job_event(msg.subject)
        if ev in ("claimed", "started"):
            taken.setdefault(decode(msg.data).event.job_id, time.time())
        elif ev in ("completed", "failed", "dead"):
            fut = done.get(decode(msg.data).event.job_id)
            if fut is not None and not fut.done():
                fut.set_result(decode(msg.data).event)

    sub = await nc.subscribe(s.subjects.job_events(), cb=on_event)
    ttft: list[float] = []
    later: list[float] = []  # turns 2 and on: the ones a cache can help
    waits: list[float] = []
    evaluated: list[int] = []
    failed = moves = 0

    async def conversation(c: int) -> None:
        nonlocal failed, moves
        last = None
        messages: list[dict[str, str]] = [
            {"role": "system", "content": " ".join([f"rule{c}"] * args.system)}
        ]
        for t in range(args.turns):
            messages.append({"role": "user", "content": " ".join([f"c{c}t{t}"] * args.words)})
            inp = {"messages": list(messages)}
            lane = queue_lane(pool, "bench", session=None, kind="chat", input=inp)
            job = JobSubmitted(job_id=f"c{c}-t{t}", model=MODEL, pool="standard", kind="chat",
                               input=inp, submitter="bench", tenant="bench", lane=lane)  # fmt: skip
            addr = address(job, s.subjects, BENCH)
            done[job.job_id] = asyncio.get_running_loop().create_future()
            sent = time.time()
            await js.publish(addr.subject, encode(job, source=BENCH.source, id=addr.msg_id),
                             headers={"Nats-Msg-Id": addr.msg_id})  # fmt: skip
            ev = await asyncio.wait_for(done[job.job_id], args.timeout)
            if not ev.type.endswith("completed"):
                failed += 1
                return
            usage = ev.usage or {}
            waits.append(taken[job.job_id] - sent)
            ttft.append(waits[-1] + usage.get("prompt_eval_duration", 0) / 1e9)
            if t > 0:
                later.append(ttft[-1])
            moves += last is not None and ev.worker_id != last
            last = ev.worker_id
            evaluated.append(int(usage.get("prompt_eval_count", 0)))
            messages.append({"role": "assistant", "content": ev.output["message"]["content"]})
            await asyncio.sleep(args.think * (0.5 + ((c * 7 + t * 3) % 11) / 10))

    t0 = time.perf_counter()
    await asyncio.gather(*(conversation(c) for c in range(args.sessions)))
    elapsed = time.perf_counter() - t0
    await sub.unsubscribe()
    for w in workers:
        w.stop()
    await asyncio.wait(tasks, timeout=30)
    for srv in servers:
        await srv.stop()
    await nc.close()
    return {
        "policy": name,
        "turns": len(ttft),
        "failed": failed,
        "ttft_mean_s": statistics.fmean(ttft),
        "ttft_p50_s": statistics.median(ttft),
        "ttft_p95_s": p95(ttft),
        "ttft_later_mean_s": statistics.fmean(later) if later else 0.0,
        "wait_p50_s": statistics.median(waits),
        "wait_p95_s": p95(waits),
        "moves": moves,
        "prompt_words_evaluated": sum(evaluated),
        "turns_per_s": len(ttft) / elapsed,
        "elapsed_s": elapsed,
    }


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--slots", type=int, default=2, help="jobs each worker runs at once")
    ap.add_argument("--sessions", type=int, default=12)
    ap.add_argument("--turns", type=int, default=5)
    ap.add_argument("--system", type=int, default=300, help="words of the system prompt")
    ap.add_argument("--words", type=int, default=20, help="words of each user message")
    ap.add_argument("--prompt-token-s", type=float, default=0.002, help="s per uncached word")
    ap.add_argument("--token-s", type=float, default=0.002, help="s per generated word")
    ap.add_argument(
        "--think", type=float, default=0.5, help="s between an answer and the next turn"
    )
    ap.add_argument("--lanes", type=int, default=16)
    ap.add_argument("--affinity-wait", type=float, default=0.5, help="pool affinity_wait_s")
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--json", action="store_true", help="print JSON lines only")
    args = ap.parse_args()
    fake = _fake_module()
    with tempfile.TemporaryDirectory(prefix="jetgrid-bench-sessions-") as tmp:
        server = NatsServer(Path(tmp) / "nats", port=0, log_file=Path(tmp) / "nats.log")
        server.start()
        try:
            rows = [
                await scenario(server.url, n, name, args, fake, Path(tmp))
                for n, name in enumerate(("affinity", "plain"))
            ]
        finally:
            server.stop()
    if args.json:
        for r in rows:
            print(json.dumps(r))
        return
    print(f"{args.sessions} chats x {args.turns} turns, {args.workers} workers x {args.slots} "
          f"slots, system prompt {args.system} words, {args.words} words a message, "
          f"{args.prompt_token_s * 1000:g} ms per uncached prompt word, think {args.think:g} s; "
          f"load average "
          f"{os.getloadavg()[0]:.2f}")  # fmt: skip
    print(f"{'policy':9} {'TTFT mean':>10} {'p50':>8} {'p95':>8} {'turn 2+':>8} {'wait p95':>9} "
          f"{'moves':>6} {'words eval':>10} {'turns/s':>8} {'failed':>6}")  # fmt: skip
    for r in rows:
        print(f"{r['policy']:9} {r['ttft_mean_s'] * 1000:>8.0f}ms {r['ttft_p50_s'] * 1000:>6.0f}ms "
              f"{r['ttft_p95_s'] * 1000:>6.0f}ms {r['ttft_later_mean_s'] * 1000:>6.0f}ms "
              f"{r['wait_p95_s'] * 1000:>7.0f}ms {r['moves']:>6} "
              f"{r['prompt_words_evaluated']:>10} "
              f"{r['turns_per_s']:>8.2f} {r['failed']:>6}")  # fmt: skip
    aff, plain = rows
    cut = 1 - aff["ttft_mean_s"] / plain["ttft_mean_s"]
    cut2 = 1 - aff["ttft_later_mean_s"] / max(plain["ttft_later_mean_s"], 1e-9)
    tput = aff["turns_per_s"] / plain["turns_per_s"]
    print(f"affinity's mean TTFT is {cut:.0%} lower over all turns, {cut2:.0%} over turns 2 "
          f"and on (target >= 40%): {'meets' if cut >= 0.4 else 'MISSES'} / "
          f"{'meets' if cut2 >= 0.4 else 'MISSES'}")  # fmt: skip
    print(f"throughput affinity / plain: {tput:.1%} (target: no loss, >= 100%): "
          f"{'meets' if tput >= 1.0 else 'MISSES'}")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
