from __future__ import annotations

import pytest
from nats.aio.client import Client as NATS
from nats.js.api import StorageType

from jetgrid.coordinator.consumers import consumer_name, pool_consumer
from jetgrid.coordinator.errors import ProvisioningError
from jetgrid.coordinator.provision import (
    consumer_config,
    consumer_drift,
    ensure_consumer,
    provision_deployment,
    provision_streams,
    stream_config,
    stream_drift,
)
from jetgrid.coordinator.settings import Settings
from jetgrid.events import ConfigError, StreamNames, Subjects, stream_specs
from jetgrid.events.streams import LOGICAL_NAMES, Retention, parse_retention

SPECS = stream_specs(Subjects("jetgrid"), StreamNames(""))


def test_specs_cover_the_streams_with_limits_retention() -> None:
    assert [s.name for s in SPECS] == [
        "JOBS", "JOB_EVENTS", "WORKERS", "INVALID", "ROLLUPS", "TOKENS"
    ]  # fmt: skip
    assert SPECS[5].subjects == ("jetgrid.tokens.*.*",) and SPECS[5].max_age_s == 3600.0
    assert [s.storage for s in SPECS] == ["file"] * 5 + ["memory"]  # chunks skip the fsyncs
    assert SPECS[4].subjects == ("jetgrid.rollup.*",) and SPECS[4].max_age_s == 0  # forever
    assert SPECS[0].subjects == (
        "jetgrid.jobs.*.*",
        "jetgrid.jobs.*.*.high",
        "jetgrid.jobs.*.*.low",
        "jetgrid.jobs.*.*.*.*",
        "jetgrid.jobs.*.*.*.*.*",
    )
    cfg = stream_config(SPECS[0])
    assert cfg.retention.value == "limits" and cfg.max_msgs_per_subject == -1


def test_identical_configs_have_no_drift() -> None:
    assert stream_drift(stream_config(SPECS[0]), stream_config(SPECS[0])) == {}


def test_drift_lists_each_changed_field() -> None:
    want = stream_config(SPECS[0])
    have = stream_config(stream_specs(Subjects(), StreamNames(), duplicate_window_s=60)[0])
    assert stream_drift(want, have) == {"duplicate_window": (60.0, 3600.0)}


def test_consumer_names_and_drift() -> None:
    assert consumer_name("fast", "llama3.2:1b") == "pool-fast-llama3_2E2_3A1b"
    spec = pool_consumer(
        Subjects(), "JOBS", "fast", "m", ack_wait_s=30, max_deliver=5, max_ack_pending=10
    )
    assert consumer_drift(spec, consumer_config(spec)) == {}
    other = pool_consumer(
        Subjects(), "JOBS", "fast", "m", ack_wait_s=60, max_deliver=5, max_ack_pending=10
    )
    assert consumer_drift(spec, consumer_config(other)) == {"ack_wait_s": (60.0, 30.0)}


@pytest.mark.integration
async def test_provisioning_is_idempotent_and_updates_drift(settings: Settings, nc: NATS) -> None:
    js = nc.jetstream()
    specs = stream_specs(settings.subjects, settings.streams)
    first = await provision_streams(js, specs)
    assert first.created == [s.name for s in specs]
    again = await provision_streams(js, specs)
    assert again.created == [] and again.updated == {}
    assert again.unchanged == [s.name for s in specs]

    changed = stream_specs(settings.subjects, settings.streams, duplicate_window_s=120)
    with pytest.raises(ProvisioningError, match="drifted"):
        await provision_streams(js, changed, update=False)
    report = await provision_streams(js, changed)
    assert report.updated == {specs[0].name: {"duplicate_window": (3600.0, 120.0)}} | {
        s.name: {"duplicate_window": (3600.0, 120.0)} for s in specs[1:]
    }
    info = await js.stream_info(specs[0].name)
    assert info.config.duplicate_window == 120
    assert any("updated stream" in line for line in report.lines())


@pytest.mark.integration
async def test_immutable_drift_is_refused(settings: Settings, nc: NATS) -> None:
    js = nc.jetstream()
    spec = stream_specs(settings.subjects, settings.streams)[3]
    cfg = stream_config(spec)
    cfg.storage = StorageType.MEMORY
    await js.add_stream(cfg)
    with pytest.raises(ProvisioningError, match="cannot change that in place"):
        await provision_streams(js, [spec])


@pytest.mark.integration
async def test_ensure_consumer_creates_then_reports_or_updates(
    streams: Settings, nc: NATS, caplog: pytest.LogCaptureFixture
) -> None:
    js = nc.jetstream()
    s = streams
    spec = pool_consumer(
        s.subjects, s.streams.jobs, "fast", "m", ack_wait_s=30, max_deliver=5, max_ack_pending=8
    )
    assert await ensure_consumer(js, spec) == {}
    assert await ensure_consumer(js, spec) == {}
    newer = pool_consumer(
        s.subjects, s.streams.jobs, "fast", "m", ack_wait_s=45, max_deliver=5, max_ack_pending=8
    )
    assert await ensure_consumer(js, newer) == {"ack_wait_s": (30.0, 45.0)}
    assert "differs" in caplog.text
    assert (await js.consumer_info(s.streams.jobs, spec.name)).config.ack_wait == 30
    await ensure_consumer(js, newer, update=True)
    assert (await js.consumer_info(s.streams.jobs, spec.name)).config.ack_wait == 45


def test_a_deployment_is_the_log_streams_and_dead_letters() -> None:
    from jetgrid.coordinator.provision import deployment_specs

    specs = deployment_specs(Settings(stream_prefix="X_", stream_replicas=3))
    assert [s.name for s in specs] == ["X_JOBS", "X_JOB_EVENTS", "X_WORKERS", "X_INVALID",
                                       "X_ROLLUPS", "X_TOKENS", "X_DEAD_LETTERS"]  # fmt: skip
    assert {s.replicas for s in specs} == {3}
    on_disk = deployment_specs(Settings(tokens_storage="file"))
    assert {s.storage for s in on_disk} == {"file"}


@pytest.mark.integration
async def test_provision_deployment_adds_the_buckets_once(settings: Settings, nc: NATS):
    from jetgrid.coordinator.provision import provision_deployment

    first = await provision_deployment(nc.jetstream(), settings)
    assert f"KV_{settings.tiers_bucket}" in first.created
    assert f"OBJ_{settings.snapshot_bucket}" in first.created
    again = await provision_deployment(nc.jetstream(), settings)
    assert again.created == [] and len(again.unchanged) == 7


def test_every_raw_stream_has_an_age_limit_by_default() -> None:
    ages = {s.logical: s.max_age_s for s in SPECS}
    assert ages == {"JOBS": 30 * 86400.0, "JOB_EVENTS": 30 * 86400.0,
                    "WORKERS": 7 * 86400.0, "INVALID": 30 * 86400.0,
                    "ROLLUPS": 0.0, "TOKENS": 3600.0}  # fmt: skip
    assert Settings().retention["DEAD_LETTERS"].max_age_s == 30 * 86400.0
    assert stream_config(SPECS[2]).max_age == 7 * 86400.0


@pytest.mark.parametrize(
    ("text", "age", "size"),
    [("7d", 7 * 86400.0, -1), ("12h,5GiB", 43200.0, 5 * 1024**3), ("0", 0.0, -1),
     ("0,10MB", 0.0, 10_000_000), ("90m", 5400.0, -1), ("30 d, 1 TiB", 30 * 86400.0, 1024**4)],
)  # fmt: skip
def test_retention_settings_parse(text: str, age: float, size: int) -> None:
    assert parse_retention(text) == Retention(age, size)


@pytest.mark.parametrize(
    ("env", "says"),
    [({"JETGRID_RETENTION_JOBS": "30d,1GiB"}, "size cap"),
     ({"JETGRID_RETENTION_JOBS": "2h"}, "shorter than a day"),
     ({"JETGRID_RETENTION_WORKERS": "a week"}, "not a retention")],
)  # fmt: skip
def test_retention_that_could_drop_queued_jobs_or_does_not_parse_is_refused(
    env: dict[str, str], says: str
) -> None:
    with pytest.raises(ConfigError, match=says):
        Settings.from_env(env)


@pytest.mark.integration
async def test_provision_applies_retention_to_new_and_existing_streams(
    settings: Settings, nc: NATS
) -> None:
    js = nc.jetstream()
    forever = stream_specs(
        settings.subjects, settings.streams, retention={k: Retention() for k in LOGICAL_NAMES}
    )
    await provision_streams(js, forever)  # a deployment from before retention
    assert (await js.stream_info(settings.streams.workers)).config.max_age == 0
    custom = settings.replace(retention_workers="2d,1GiB")
    report = await provision_deployment(js, custom)
    assert report.updated[settings.streams.workers] == {
        "max_age": (0.0, 2 * 86400.0),
        "max_bytes": (-1, 1024**3),
    }
    cfg = (await js.stream_info(settings.streams.workers)).config
    assert (cfg.max_age, cfg.max_bytes) == (2 * 86400.0, 1024**3)
    assert (await js.stream_info(settings.streams.jobs)).config.max_age == 30 * 86400.0
    assert (await provision_deployment(js, custom)).updated == {}
