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
    provision_streams,
    stream_config,
    stream_drift,
)
from jetgrid.coordinator.settings import Settings
from jetgrid.events import StreamNames, Subjects, stream_specs

SPECS = stream_specs(Subjects("jetgrid"), StreamNames(""))


def test_specs_cover_the_four_streams_with_limits_retention() -> None:
    assert [s.name for s in SPECS] == ["JOBS", "JOB_EVENTS", "WORKERS", "INVALID"]
    assert SPECS[0].subjects == (
        "jetgrid.jobs.*.*",
        "jetgrid.jobs.*.*.high",
        "jetgrid.jobs.*.*.low",
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
                                       "X_DEAD_LETTERS"]  # fmt: skip
    assert {s.replicas for s in specs} == {3}


@pytest.mark.integration
async def test_provision_deployment_adds_the_tiers_bucket_once(settings: Settings, nc: NATS):
    from jetgrid.coordinator.provision import provision_deployment

    first = await provision_deployment(nc.jetstream(), settings)
    assert f"KV_{settings.tiers_bucket}" in first.created
    again = await provision_deployment(nc.jetstream(), settings)
    assert again.created == [] and len(again.unchanged) == 5
