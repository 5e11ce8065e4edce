"""Tenants in the NATS permissions: a client user queues only under its own tenant token (and
its lanes), the gateway under any, python stays denied in every form, and only unrestricted
workers may make tenant-queue consumers and read the queue counts."""

from __future__ import annotations

from jetgrid.coordinator.roles import Deployment, User, permissions, service_user, worker_user

D = Deployment("acme.grid", "A_")


def _perms(user: User) -> tuple[tuple[str, ...], tuple[str, ...]]:
    perms = permissions(user, D)
    assert perms is not None
    return perms.publish, perms.publish_deny


def test_a_client_queues_only_as_itself() -> None:
    allow, deny = _perms(service_user("client"))
    assert "acme.grid.jobs.*.*.*.client" in allow and "acme.grid.jobs.*.*.*.client.*" in allow
    assert "acme.grid.jobs.*.*.*.*" not in allow and "acme.grid.jobs.*.*.*.*.*" not in allow
    for form in ("", ".*", ".*.*", ".*.*.*"):
        assert f"acme.grid.jobs.*.python{form}" in deny


def test_the_gateway_queues_for_any_tenant() -> None:
    allow, _ = _perms(service_user("gateway"))
    assert {"acme.grid.jobs.*.*.*.*", "acme.grid.jobs.*.*.*.*.*"} <= set(allow)


def test_only_unrestricted_workers_make_tenant_consumers() -> None:
    free, _ = _perms(worker_user("w1"))
    assert "$JS.API.CONSUMER.CREATE.A_JOBS.*.acme.grid.jobs.*.*.*.*" in free
    assert "$JS.API.CONSUMER.CREATE.A_JOBS.*.acme.grid.jobs.*.*.*.*.*" in free
    assert "$JS.API.STREAM.INFO.A_JOBS" in free
    held, _ = _perms(worker_user("w1", (("fast", "m"),)))
    assert not any(".jobs.*.*.*.*" in p or "STREAM.INFO.A_JOBS" in p for p in held)
