# ruff: noqa: E501  (a benchmark script: long print lines read better unwrapped)
"""`make bench`: the four speed benches of issue 13 in one command, one table, target beside figure.

Runs, one after another, each through its own command line (each starts its own nats-server and
measures its figure against its baseline in the same run):

  bench/roundtrip.py           round trip jobs/s and paced p50, jetgrid / raw JetStream (--rounds 7)
  bench/replay.py              replay of the read models / raw ordered consumer into SQLite (run 3x)
  bench/projector_capacity.py  workers one projector follows at 1 Hz with p99 lag < 1 s (run 3x;
                               the largest of --counts sustained, 0 if none)
  bench/gateway.py             HTTP submit-and-wait / NATS, GET /healthz / bare Starlette (--rounds 7);
                               its row's note adds NATS waiting for the stored event / NATS and
                               HTTP / that (no target)

and prints one table: figure, now (median of the rounds), target, met?, with the machine's load
average before and after. roundtrip.py and gateway.py pair jetgrid with its baseline in rounds of
a few seconds each, whose ratios move by a tenth or more from round to round on a shared 2-core
box, so they run `--paired-rounds` (7) of them; replay.py and projector_capacity.py run whole,
`--rounds` (3) times. Sizes are chosen so the whole takes under 5 minutes on a quiet 2-core
machine; `--scale 2` doubles them, `--only gateway,replay` runs some. The roundtrip and gateway
JSON files are kept in bench/results/, with this summary as bench/results/all-<time>.json.

    .venv/bin/python bench/all.py [--rounds 3] [--paired-rounds 7] [--scale 1] [--only NAMES]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
PY = sys.executable
STAMP = time.strftime("%Y%m%d-%H%M%S")


@dataclass
class Row:
    figure: str
    target: str
    met: Callable[[float], bool]
    fmt: str = "{:.2f}x"
    now: float | None = None
    note: str = ""


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run(cmd: list[str], limit_s: float) -> str:
    """Run one bench command, its output passed through to stderr; its stdout."""
    print(f"$ {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, timeout=limit_s, cwd=BENCH.parent)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-2000:])
        raise RuntimeError(f"{cmd[1]} exited with status {proc.returncode}")
    return proc.stdout


def number(pattern: str, text: str, what: str) -> float:
    m = re.search(pattern, text)
    if m is None:
        raise RuntimeError(f"no {what} in the output")
    return float(m.group(1).replace(",", ""))


def roundtrip(args: argparse.Namespace, rows: dict[str, Row]) -> None:
    out = RESULTS / f"roundtrip-{STAMP}.json"
    n = 1500 * args.scale
    run(
        [
            PY,
            "bench/roundtrip.py",
            "--jobs",
            str(n),
            "--latency-jobs",
            str(300 * args.scale),
            "--rounds",
            str(args.paired_rounds),
            "--no-gateway",
            "--out",
            str(out),
        ],
        600,
    )
    result = json.loads(out.read_text())
    ratios = result["ratios"]
    rows["rt"].now = ratios["throughput_jetgrid_over_raw"]
    rows["lat"].now = ratios["paced_p50_jetgrid_over_raw"]
    sides = [(r["jetgrid"], r["raw"]) for r in result["rounds"]]
    rows["rt"].note = "rounds " + ", ".join(
        f"{j['throughput']['jobs_per_s'] / w['throughput']['jobs_per_s']:.2f}" for j, w in sides
    )
    rows["lat"].note = "rounds " + ", ".join(
        f"{j['latency']['latency_ms']['p50'] / w['latency']['latency_ms']['p50']:.2f}"
        for j, w in sides
    )


def replay(args: argparse.Namespace, rows: dict[str, Row]) -> None:
    # 250 workers x 240 s: 60,000 pings, enough that a replay receives WORKERS in a child
    # process (projections.replay.APART_MIN), as any replay worth timing does.
    size = [
        "--workers",
        str(250 * args.scale),
        "--seconds",
        "240",
        "--jobs",
        str(2500 * args.scale),
    ]
    ratios = [
        number(r"ratio jetgrid/raw:\s*([\d.]+)", run([PY, "bench/replay.py", *size], 300), "ratio")
        for _ in range(args.rounds)
    ]
    rows["replay"].now = statistics.median(ratios)
    rows["replay"].note = "rounds " + ", ".join(f"{r:.2f}" for r in ratios)


def projector(args: argparse.Namespace, rows: dict[str, Row]) -> None:
    cmd = [
        PY,
        "bench/projector_capacity.py",
        "--counts",
        args.counts,
        "--duration",
        str(12 * args.scale),
        "--warmup",  # its first seconds include start-up: 2 s of 6 read 3000 as not sustained
        "4",
    ]
    best = [
        number(r"largest sustained:\s*([\d,]+)", run(cmd, 300), "largest sustained count")
        for _ in range(args.rounds)
    ]
    rows["proj"].now = statistics.median(best)
    rows["proj"].note = f"counts tried {args.counts}; rounds " + ", ".join(f"{b:.0f}" for b in best)


def gateway(args: argparse.Namespace, rows: dict[str, Row]) -> None:
    out = RESULTS / f"gateway-{STAMP}.json"
    run(
        [
            PY,
            "bench/gateway.py",
            "--jobs",
            str(200 * args.scale),
            "--rounds",
            str(args.paired_rounds),
            "--paced-jobs",
            str(100 * args.scale),
            "--paths",
            "nats,nats-log,v1,healthz,bare",
            "--out",
            str(out),
        ],
        600,
    )
    s = json.loads(out.read_text())
    rows["gw"].now = s["submit_wait_ratio"]
    rows["healthz"].now = s["healthz_ratio"]
    notes = []
    if s.get("log_wait_ratio") is not None:
        notes.append(
            f"NATS waiting for the stored event {s['log_wait_ratio']:.2f}x, "
            f"HTTP / that {s['submit_wait_over_log']:.2f}x"
        )
    paced = s["paced"]
    if "v1" in paced and "nats" in paced:
        v, n = paced["v1"], paced["nats"]
        notes.append(
            f"paced {v['rate']:g}/s: HTTP p50 {v['p50_ms']:.1f} / p99 {v['p99_ms']:.1f} ms, "
            f"NATS p50 {n['p50_ms']:.1f} / p99 {n['p99_ms']:.1f} ms"
        )
    rows["gw"].note = "; ".join(notes)


BENCHES = {"roundtrip": roundtrip, "replay": replay, "projector": projector, "gateway": gateway}
OWNS = {
    "roundtrip": ("rt", "lat"),
    "replay": ("replay",),
    "projector": ("proj",),
    "gateway": ("gw", "healthz"),
}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="runs of replay.py and projector_capacity.py; the figure is their median [3]",
    )
    ap.add_argument(
        "--paired-rounds",
        type=int,
        default=7,
        help="rounds of roundtrip.py and gateway.py; the figure is their median [7]",
    )
    ap.add_argument("--scale", type=int, default=1, help="multiply every size by this [1]")
    ap.add_argument(
        "--counts",
        default="3000,5000",
        help="projector_capacity.py: worker counts, tried up to the first not sustained [3000,5000]",
    )
    ap.add_argument("--only", help=f"comma-separated subset of {','.join(BENCHES)}")
    args = ap.parse_args()
    if min(args.rounds, args.paired_rounds) < 3:
        print(
            "note: fewer than 3 rounds; the figures are not the medians the targets ask for",
            file=sys.stderr,
        )
    rows = {
        "rt": Row("round trip jobs/s, jetgrid / raw JetStream", ">= 0.8x", lambda x: x >= 0.8),
        "lat": Row("paced p50 latency, jetgrid / raw", "<= 1.5x", lambda x: x <= 1.5),
        "replay": Row("replay of the read models / raw into SQLite", ">= 0.7x", lambda x: x >= 0.7),
        "proj": Row(
            "workers one projector follows at 1 Hz, p99 lag < 1 s",
            ">= 5,000",
            lambda x: x >= 5000,
            "{:,.0f}",
        ),
        "gw": Row("HTTP submit-and-wait / the same jobs on NATS", ">= 0.7x", lambda x: x >= 0.7),
        "healthz": Row("GET /healthz, gateway / bare Starlette", ">= 0.8x", lambda x: x >= 0.8),
    }
    chosen = args.only.split(",") if args.only else list(BENCHES)
    unknown = [c for c in chosen if c not in BENCHES]
    if unknown:
        ap.error(f"--only: {', '.join(unknown)} is not one of {', '.join(BENCHES)}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    before, t0 = load(), time.perf_counter()
    for name in chosen:
        try:
            BENCHES[name](args, rows)
        except (RuntimeError, subprocess.TimeoutExpired, OSError, KeyError, ValueError) as exc:
            for key in OWNS[name]:
                rows[key].note = f"{name} failed: {exc}"
    took = time.perf_counter() - t0
    shown = [rows[k] for name in chosen for k in OWNS[name]]
    width = max(len(r.figure) for r in shown)
    print(
        f"\nmake bench: {took:.0f} s; load average before {before}, after {load()} (1, 5, 15 min)"
    )
    print(f"{'figure':{width}}  {'now':>8}  {'target':>8}  met?")
    for r in shown:
        now = r.fmt.format(r.now) if r.now is not None else "-"
        met = ("yes" if r.met(r.now) else "NO") if r.now is not None else "-"
        print(f"{r.figure:{width}}  {now:>8}  {r.target:>8}  {met:4}  {r.note}")
    summary = {
        "seconds": took,
        "load_before": before,
        "load_after": load(),
        "rounds": args.rounds,
        "paired_rounds": args.paired_rounds,
        "scale": args.scale,
        "figures": [
            {
                "figure": r.figure,
                "now": r.now,
                "target": r.target,
                "met": r.met(r.now) if r.now is not None else None,
                "note": r.note,
            }
            for r in shown
        ],
    }
    (RESULTS / f"all-{STAMP}.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
