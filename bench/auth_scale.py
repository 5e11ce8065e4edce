"""What per-worker NATS users cost: server start, memory and reload with N users, and ping
throughput with permissions on versus off, measured in one run on this machine.

    .venv/bin/python bench/auth_scale.py [--users 100,1000,10000] [--pings 5000]

Prints a table; the open server is the baseline of the same run. Figures are relative.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.natsconf import NatsConfig, Secret, render_nats_config
from jetgrid.coordinator.provision import provision_streams
from jetgrid.coordinator.roles import SERVICE_USERS, service_user, worker_user
from jetgrid.coordinator.settings import Settings
from jetgrid.events import WorkerHeartbeat, encode, stream_specs
from jetgrid.natsserver import NatsServer


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def config(n_workers: int | None) -> str:
    if n_workers is None:
        return render_nats_config(NatsConfig(users=None))
    users = [service_user(r) for r in SERVICE_USERS] + [
        worker_user(f"gpu-{i}") for i in range(max(n_workers, 1))
    ]
    return render_nats_config(
        NatsConfig(users=tuple((u, Secret(value="pw-" + u.name)) for u in users))
    )


async def pings_per_s(server: NatsServer, user: str | None, n: int, window: int = 500) -> float:
    s = Settings(nats_url=server.url)  # the default prefixes, which the config names
    admin = await Bus.connect(
        s.replace(nats_user="admin", nats_password="pw-admin") if user else s, name="bench-admin"
    )
    await provision_streams(admin.js, stream_specs(s.subjects, s.streams))
    await admin.close()
    if user:
        s = s.replace(nats_user=user, nats_password=f"pw-{user}")
    nc = (await Bus.connect(s, name="bench")).nc
    js = nc.jetstream()
    wid = "gpu-0"
    body = encode(
        WorkerHeartbeat(
            worker_id=wid,
            n=0,
            healthy=True,
            interval_s=5,
            in_flight=0,
            completed=0,
            failed=0,
            pools=["standard"],
            models=["m"],
            nvml=False,
        ),
        source="bench",
    )
    subject = s.subjects.worker_event(wid, "heartbeat")
    t = time.perf_counter()
    for _ in range(0, n, window):
        await asyncio.gather(*(js.publish(subject, body) for _ in range(window)))
    rate = n / (time.perf_counter() - t)
    await nc.close()
    return rate


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--users", default="100,1000,10000")
    ap.add_argument("--pings", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    sizes: list[int | None] = [None, *(int(x) for x in args.users.split(","))]
    print(
        f"{'worker users':>12} {'conf KiB':>9} {'start s':>8} {'RSS MiB':>8} {'reload s':>9} "
        f"{'pings/s (median)':>17}"
    )
    base = None
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            conf = Path(tmp) / "nats.conf"
            conf.write_text(config(n))
            server = NatsServer(Path(tmp) / "store", conf=conf, port=0)
            t = time.perf_counter()
            server.start(timeout=120)
            start_s = time.perf_counter() - t
            assert server.proc is not None
            rss = rss_mib(server.proc.pid)
            reload_s = float("nan")
            if n is not None:
                before = len(server.tail)
                t = time.perf_counter()
                server.proc.send_signal(1)  # SIGHUP: what worker-credentials add does
                # The log tail is filled by a thread: poll it.
                while not any("Reloaded" in ln for ln in list(server.tail)[before - 1 :]):  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
                reload_s = time.perf_counter() - t
            rates = [
                await pings_per_s(server, "worker-gpu-0" if n is not None else None, args.pings)
                for _ in range(args.repeat)
            ]
            server.stop()
        rate = statistics.median(rates)
        base = base or rate
        label = "open" if n is None else str(n)
        print(
            f"{label:>12} {len(config(n)) / 1024:9.0f} "
            f"{start_s:8.2f} {rss:8.1f} {reload_s:9.2f} {rate:10.0f} ({rate / base:4.2f}x)"
        )


if __name__ == "__main__":
    asyncio.run(main())
