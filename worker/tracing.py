"""A job's spans, exported with OpenTelemetry when an OTLP endpoint is configured.

Per run (`Tracing.begin`, when the job starts): the ``traceparent`` header of the job's message
in JOBS (coordinator.tracecontext; the gateway sets it) is the parent of two spans, both with
event times: ``jetgrid.queue_wait``, from the submission's time to the start, and
``jetgrid.run``, from the start to the outcome (`JobTrace.end`). The backend's HTTP calls carry
a ``traceparent`` naming the run span (`RunContext.traceparent`, and for httpx clients the
`add_traceparent` request hook, which reads it from the run's context). Without an exporter no
span is recorded, and the job's own traceparent is passed on unchanged.

The exporter: ``JETGRID_OTLP_ENDPOINT`` (OTLP over HTTP, e.g. http://collector:4318/v1/traces;
needs the ``otlp`` extra) or, in tests, any SpanExporter given to `Tracing.configure`, through
the same provider and span code.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    TraceFlags,
    Tracer,
    set_span_in_context,
)

from jetgrid.coordinator.settings import Settings
from jetgrid.coordinator.tracecontext import HEADER, TraceParent
from jetgrid.events import ConfigError, JobSubmitted

__all__ = ["BACKEND_TRACEPARENT", "JobTrace", "SpanExporter", "Tracing", "add_traceparent"]

BACKEND_TRACEPARENT: ContextVar[str | None] = ContextVar("jetgrid_traceparent", default=None)
"""The traceparent a running job's backend calls carry (set in the job's task)."""


async def add_traceparent(request: httpx.Request) -> None:
    """httpx request hook: send the running job's traceparent, if it has one."""
    value = BACKEND_TRACEPARENT.get()
    if value is not None:
        request.headers[HEADER] = value


def _ns(t: datetime) -> int:
    return int(t.timestamp() * 1e9)


@dataclass
class JobTrace:
    """One run's spans: `backend` is the traceparent its backend calls carry (None: none)."""

    backend: str | None
    run: Span | None = None

    def end(self, at: datetime, outcome: str | None = None) -> None:
        if self.run is not None:
            if outcome is not None:
                self.run.set_attribute("jetgrid.outcome", outcome)
            self.run.end(end_time=_ns(at))
            self.run = None


class Tracing:
    """A worker's tracer (None: not exporting) and how it makes each run's spans."""

    def __init__(self, provider: TracerProvider | None = None) -> None:
        self.provider = provider
        self.tracer: Tracer | None = provider.get_tracer("jetgrid.worker") if provider else None

    @classmethod
    def configure(
        cls, settings: Settings, worker_id: str, exporter: SpanExporter | None = None
    ) -> Tracing:
        """Export to `exporter`, else to settings.otlp_endpoint, else not at all."""
        if exporter is None and not settings.otlp_endpoint:
            return cls()
        resource = Resource.create(
            {"service.name": "jetgrid-worker", "service.instance.id": worker_id}
        )
        provider = TracerProvider(resource=resource)
        if exporter is not None:
            provider.add_span_processor(SimpleSpanProcessor(exporter))
        else:
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter,
                )
            except ImportError:
                raise ConfigError(
                    f"JETGRID_OTLP_ENDPOINT is {settings.otlp_endpoint!r} but the OTLP exporter "
                    "is not installed; install jetgrid[otlp], or unset it."
                ) from None
            exporting = OTLPSpanExporter(endpoint=settings.otlp_endpoint)
            provider.add_span_processor(BatchSpanProcessor(exporting))
        return cls(provider)

    def begin(
        self,
        parent: TraceParent | None,
        job: JobSubmitted,
        *,
        worker_id: str,
        attempt: int,
        submitted_at: datetime,
        started_at: datetime,
    ) -> JobTrace:
        """Record the queue wait and open the run span (see the module doc)."""
        if self.tracer is None:
            return JobTrace(parent.header() if parent else None)
        context = None
        if parent is not None:
            remote = SpanContext(
                trace_id=int(parent.trace_id, 16),
                span_id=int(parent.parent_id, 16),
                is_remote=True,
                trace_flags=TraceFlags(parent.flags),
            )
            context = set_span_in_context(NonRecordingSpan(remote))
        attrs: dict[str, Any] = {
            "jetgrid.job_id": job.job_id,
            "jetgrid.model": job.model,
            "jetgrid.pool": job.pool,
            "jetgrid.worker_id": worker_id,
            "jetgrid.attempt": attempt,
        }
        wait = self.tracer.start_span(
            "jetgrid.queue_wait", context=context, start_time=_ns(submitted_at), attributes=attrs
        )
        wait.end(end_time=_ns(max(started_at, submitted_at)))
        run = self.tracer.start_span(
            "jetgrid.run", context=context, start_time=_ns(started_at), attributes=attrs
        )
        sc = run.get_span_context()
        own = TraceParent(f"{sc.trace_id:032x}", f"{sc.span_id:016x}", int(sc.trace_flags))
        return JobTrace(own.header(), run)

    def close(self) -> None:
        """Export what is pending and stop."""
        if self.provider is not None:
            self.provider.shutdown()
