"""Worker events written before `problems` (pings) and `pull_rate` (registrations) existed
still decode, to the defaults: both fields are optional additions to version 1."""

from __future__ import annotations

from jetgrid.events import WorkerHeartbeat, WorkerRegistered, decode

# Frozen copies of version-1 events as the first workers wrote them: never edit these.
V1_PING = (
    b'{"specversion":"1.0","id":"w1:b1:hb:7","source":"jetgrid/worker/w1",'
    b'"type":"jetgrid.worker.heartbeat","time":"2026-01-01T00:00:07Z",'
    b'"datacontenttype":"application/json","dataversion":1,"data":{"worker_id":"w1","n":7,'
    b'"healthy":false,"interval_s":5.0,"in_flight":1,"completed":3,"failed":0,'
    b'"pools":["standard"],"models":["echo"],"nvml":false,"nvml_error":"no NVML","gpus":[],'
    b'"tier_factor":null,"accepting":true,"boot_id":"b1"}}'
)
V1_REGISTERED = (
    b'{"specversion":"1.0","id":"w1:b1:registered","source":"jetgrid/worker/w1",'
    b'"type":"jetgrid.worker.registered","time":"2026-01-01T00:00:00Z",'
    b'"datacontenttype":"application/json","dataversion":1,"data":{"worker_id":"w1",'
    b'"pools":["standard"],"models":["echo"],"backend":"echo","concurrency":2,'
    b'"heartbeat_interval_s":5.0,"hostname":"h","jetgrid_version":"0.1.0","boot_id":"b1"}}'
)


def test_a_v1_ping_without_problems_decodes_with_none() -> None:
    ping = decode(V1_PING).event
    assert isinstance(ping, WorkerHeartbeat)
    assert (ping.n, ping.healthy, ping.problems) == (7, False, [])


def test_a_v1_registration_without_a_pull_rate_means_no_base_rate() -> None:
    reg = decode(V1_REGISTERED).event
    assert isinstance(reg, WorkerRegistered)
    assert reg.pull_rate is None and reg.concurrency == 2
