"""A traceparent travels from the HTTP request through the job's NATS headers to the worker's
spans and its backend's calls, and the job view shows its trace id (worker.tracing)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from jetgrid.coordinator.settings import Settings
from jetgrid.coordinator.tracecontext import parse
from jetgrid.events import ConfigError, JobSubmitted
from jetgrid.worker.agent import Worker, WorkerOptions
from jetgrid.worker.backends.base import Result, RunContext
from jetgrid.worker.backends.echo import EchoBackend
from jetgrid.worker.tracing import Tracing, add_traceparent
from tests.gateway.conftest import in_process
from tests.helpers import until

TID = "4bf92f3577b34da6a3ce929d0e0e4736"
PID = "00f067aa0ba902b7"


class CallingBackend(EchoBackend):
    """Echo, after one HTTP call of its own (to an in-process handler that records headers)."""

    def __init__(self) -> None:
        super().__init__()
        self.given: list[str | None] = []
        self.sent: list[str | None] = []

    async def run(self, job: JobSubmitted, ctx: RunContext) -> Result:
        self.given.append(ctx.traceparent)

        def handler(request: httpx.Request) -> httpx.Response:
            self.sent.append(request.headers.get("traceparent"))
            return httpx.Response(200)

        transport = httpx.MockTransport(handler)
        hooks = {"request": [add_traceparent]}
        async with httpx.AsyncClient(transport=transport, event_hooks=hooks) as http:
            await http.get("http://model-server/api/chat")
        return await super().run(job, ctx)


@pytest.fixture
async def traced(streams: Settings) -> AsyncIterator[tuple[InMemorySpanExporter, CallingBackend]]:
    exporter, backend = InMemorySpanExporter(), CallingBackend()
    agent = Worker(streams, WorkerOptions(pool="standard", models=("echo",), worker_id="w1"),
                   backend, span_exporter=exporter)  # fmt: skip
    task = asyncio.create_task(agent.run())
    await asyncio.wait_for(agent.ready.wait(), 10)
    yield exporter, backend
    agent.stop()
    await asyncio.wait_for(task, 20)


@pytest.mark.integration
async def test_a_requests_traceparent_reaches_the_spans_the_backend_and_the_job_view(
    streams: Settings, traced: tuple[InMemorySpanExporter, CallingBackend]
) -> None:
    exporter, backend = traced
    async with in_process(streams) as (_, http):
        headers = {"traceparent": f"00-{TID}-{PID}-01"}
        job = {"model": "echo", "prompt": "hi", "pool": "standard"}
        r = await http.post("/v1/jobs?wait=10", json=job, headers=headers)
        assert r.status_code == 200, r.text
        view = (await http.get(f"/v1/jobs/{r.json()['id']}")).json()
        assert view["status"] == "completed" and view["trace_id"] == TID
        r = await http.post("/v1/jobs", json=job)  # no traceparent: the gateway makes one
        assert r.status_code == 202
        made = r.json()["trace_id"]
        assert len(made) == 32 and made != TID
        assert (await http.get(f"/v1/jobs/{r.json()['id']}")).json()["trace_id"] == made

    await until(lambda: len(backend.given) == 2 and len(exporter.get_finished_spans()) == 4)
    spans = [s for s in exporter.get_finished_spans() if f"{s.context.trace_id:032x}" == TID]
    by_name = {s.name: s for s in spans}
    assert set(by_name) == {"jetgrid.queue_wait", "jetgrid.run"}
    for span in spans:
        assert span.parent is not None and f"{span.parent.span_id:016x}" == PID
        assert span.parent.is_remote and span.attributes["jetgrid.worker_id"] == "w1"
    wait, run = by_name["jetgrid.queue_wait"], by_name["jetgrid.run"]
    assert wait.start_time <= wait.end_time <= run.start_time <= run.end_time
    # The backend's call names the run span as its parent, in the same trace.
    sent = parse(backend.sent[0])
    assert sent is not None and backend.given[0] == backend.sent[0]
    assert (sent.trace_id, sent.parent_id) == (TID, f"{run.context.span_id:016x}")
    other = [s for s in exporter.get_finished_spans() if f"{s.context.trace_id:032x}" == made]
    assert len(other) == 2


def test_tracing_is_off_without_an_endpoint_and_otlp_with_one(streams: Settings) -> None:
    assert Tracing.configure(streams, "w1").tracer is None
    tracing = Tracing.configure(streams.replace(otlp_endpoint="http://127.0.0.1:1/v1/traces"), "w1")
    assert tracing.tracer is not None
    tracing.close()


def test_an_endpoint_without_the_otlp_extra_is_named(
    streams: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", None)
    with pytest.raises(ConfigError, match="install jetgrid\\[otlp\\]"):
        Tracing.configure(streams.replace(otlp_endpoint="http://collector:4318/v1/traces"), "w1")


async def test_the_ollama_backends_calls_carry_the_running_jobs_traceparent() -> None:
    from jetgrid.worker.backends.ollama import OllamaBackend

    backend = OllamaBackend("http://127.0.0.1:1", ["tiny:1b"])
    try:
        assert add_traceparent in backend.client._client.event_hooks["request"]
    finally:
        await backend.close()


@pytest.mark.integration
async def test_the_openai_route_carries_the_traceparent_and_the_keys_tenant(
    streams: Settings, start_worker, tmp_path
) -> None:
    from jetgrid.gateway.auth import ApiKey, hash_key, key_line

    keys = tmp_path / "api-keys"
    keys.write_text(key_line(ApiKey(hash_key("k-acme"), "acme")) + "\n")
    await start_worker()
    async with in_process(streams.replace(api_keys_file=keys)) as (_, http):
        headers = {"Authorization": "Bearer k-acme", "traceparent": f"00-{TID}-{PID}-01"}

        async def served() -> bool:  # the gateway's fleet lists the worker's model
            tags = (await http.get("/api/tags", headers=headers)).json()
            return any(m["name"] == "echo" for m in tags["models"])

        await until(served, timeout=15)
        body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
        r = await http.post("/v1/chat/completions", json=body, headers=headers)
        assert r.status_code == 200, r.text
        job_id = r.json()["id"].removeprefix("chatcmpl-")
        view = (await http.get(f"/v1/jobs/{job_id}", headers=headers)).json()
        assert (view["trace_id"], view["submitter"]) == (TID, "acme")
