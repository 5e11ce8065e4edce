"""Cost of the uptime tracker's hot path: one steady ping, and one window read.

A worker pinging healthily at 1 Hz with the default windows (1 h, 24 h), already past the exact
horizon, so every ping folds one slot into each window's buckets. Prints microseconds per call:

    .venv/bin/python bench/uptime_ping.py [--age 400] [--pings 20000]

`ping` is averaged over `--pings` consecutive pings (so bucket starts are included), `window`
over reads of the tier window at the newest ping.
"""

from __future__ import annotations

import argparse
import time

from jetgrid.projections.uptime import UptimeTracker


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--age", type=int, default=400, help="pings before timing starts")
    ap.add_argument("--pings", type=int, default=20000, help="consecutive pings timed")
    args = ap.parse_args()
    t = UptimeTracker.start(1.0)
    for i in range(args.age):
        t = t.ping(1000.0 + i, i % 97 != 0)
    base = 1000.0 + args.age
    best_ping = best_window = float("inf")
    for _ in range(5):
        x = t
        start = time.perf_counter()
        for i in range(args.pings):
            x = x.ping(base + i, i % 97 != 0)
        best_ping = min(best_ping, (time.perf_counter() - start) / args.pings)
        now = base + args.pings
        start = time.perf_counter()
        for _ in range(args.pings):
            x.window(now, 3600.0)
        best_window = min(best_window, (time.perf_counter() - start) / args.pings)
    print(f"ping {best_ping * 1e6:.2f} us   window(1h) {best_window * 1e6:.2f} us   (best of 5)")


if __name__ == "__main__":
    main()
