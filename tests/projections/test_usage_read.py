"""`jetgrid usage` reads a period's runs from the log and sums them per key, model or worker."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from jetgrid.cli import main
from jetgrid.events import format_time, now
from tests.helpers import job, submit

pytestmark = pytest.mark.integration


async def test_jetgrid_usage_sums_the_periods_runs_per_key_and_prices_them(
    streams, nc, start_worker, outcomes, tmp_path: Path
) -> None:
    t0 = now() - timedelta(seconds=1)
    await start_worker("echo", "echo-2", worker_id="w1")
    await submit(nc, streams, job(1, submitter="alice"), job(2, submitter="alice"),
                 job(3, submitter="bob", model="echo-2"))  # fmt: skip
    await outcomes.wait_terminal("j1", "j2", "j3")
    t1 = now() + timedelta(seconds=1)
    prices = tmp_path / "prices.toml"
    prices.write_text('currency = "USD"\nper_1k_tokens = 1000.0\n')
    env = {
        "JETGRID_NATS_URL": streams.nats_url,
        "JETGRID_SUBJECT_PREFIX": streams.subject_prefix,
        "JETGRID_STREAM_PREFIX": streams.stream_prefix,
    }

    async def usage(*args: str) -> list[dict[str, object]]:
        period = ["--from", format_time(t0), "--to", format_time(t1)]
        got = await asyncio.to_thread(
            CliRunner().invoke, main, ["usage", *period, "--json", *args], env=env
        )
        assert got.exit_code == 0, got.output
        return json.loads(got.stdout)  # type: ignore[no-any-return]

    by_key = {r["key"]: r for r in await usage("--prices", str(prices))}
    assert set(by_key) == {"alice", "bob"}
    assert (by_key["alice"]["jobs"], by_key["alice"]["runs"]) == (2, 2)
    assert by_key["alice"]["tokens"] == 4  # the echo backend says 2 tokens per word: 2 jobs
    assert by_key["alice"]["cost"] == 4.0 and by_key["alice"]["currency"] == "USD"
    assert by_key["bob"]["gpu_s"] == 0.0  # no NVML here: no GPUs, so no GPU-seconds
    assert by_key["alice"]["energy_unknown_runs"] == 2
    assert [r["model"] for r in await usage("--by", "model")] == ["echo", "echo-2"]
    assert [r["worker"] for r in await usage("--by", "worker")] == ["w1"]

    later = ["--from", format_time(t1), "--to", format_time(t1 + timedelta(hours=1))]
    got = await asyncio.to_thread(CliRunner().invoke, main, ["usage", *later], env=env)
    assert got.exit_code == 0 and got.stdout.split() == [
        "KEY", "JOBS", "RUNS", "RUN-S", "GPU-S", "ENERGY-KJ", "TOKENS"
    ]  # fmt: skip


def test_jetgrid_usage_names_a_bad_period_or_prices_file(tmp_path: Path) -> None:
    run = CliRunner().invoke
    nats = ["--nats-url", "nats://127.0.0.1:1"]
    got = run(main, ["usage", "--from", "2026-12-05T12:00:00", *nats])
    assert got.exit_code == 2 and "--from" in got.output and "timezone" in got.output
    got = run(main, ["usage", "--from", "2026-12-05T12:00:00Z", "--to", "2026-12-05T11:00:00Z"])
    assert got.exit_code == 2 and "is not after --from" in got.output
    bad = tmp_path / "p.toml"
    bad.write_text("per_kj = -1\n")
    got = run(main, ["usage", "--from", "2026-12-05T12:00:00Z", "--prices", str(bad), *nats])
    assert got.exit_code == 2 and "per_kj has value -1" in got.output


async def test_the_reader_seeks_a_stream_by_time_rather_than_reading_it_from_the_start(
    streams, nc, bus
) -> None:
    from jetgrid.projections.usage_read import first_seq_at

    await submit(nc, streams, *(job(i) for i in range(1, 21)))
    jobs = streams.streams.jobs
    tenth = await bus.message(jobs, 10)
    assert tenth is not None and tenth.time is not None
    first = await first_seq_at(bus, jobs, tenth.time)
    assert first is not None and first <= 10
    before = await bus.message(jobs, first)
    assert before is not None and before.time == tenth.time  # only same-instant messages before
    assert await first_seq_at(bus, jobs, tenth.time + timedelta(hours=1)) is None
