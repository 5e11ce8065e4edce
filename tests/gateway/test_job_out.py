"""The job as the API shows it: written from the view without building a JobOut, byte for byte
what JobOut (the schema /openapi.json documents) writes."""

from datetime import UTC, datetime, timedelta

import pytest

from jetgrid.coordinator.settings import Settings
from jetgrid.gateway.jobout import job_fields, job_out, job_response
from jetgrid.gateway.schemas import JobOut
from jetgrid.projections.jobs import JobView

NOW = datetime(2026, 12, 6, 8, 30, 1, 250_000, tzinfo=UTC)
VIEWS = [
    JobView(job_id="new"),
    JobView(
        job_id="done",
        status="completed",
        model="llama3.2:1b",
        pool="fast",
        kind="chat",
        priority="high",
        jobs_seq=5,
        submitted_at=NOW,
        worker_id="w1",
        attempts=2,
        started_at=NOW + timedelta(seconds=1),
        finished_at=NOW + timedelta(seconds=2, microseconds=7),
        output={"text": "héllo \u2028", "n": [1, 2.5, None, True], "big": 2**60},
        usage={"prompt_tokens": 3},
        submitter="team-a",
        deadline=NOW + timedelta(minutes=1),
        trace_id="0af7651916cd43dd8448eb211c80319c",
    ),
    JobView(
        job_id="bad",
        status="failed",
        model="m",
        pool="standard",
        error="boom",
        error_type="timeout",
        cancel_requested=True,
    ),
]


@pytest.mark.parametrize("view", VIEWS, ids=[v.job_id for v in VIEWS])
@pytest.mark.parametrize("place", [None, (3, None), (1, 2.345678)])
def test_the_fast_writer_writes_what_jobout_writes(
    view: JobView, place: tuple[int, float | None] | None
) -> None:
    settings = Settings(subject_prefix="t")
    model = JobOut(**job_fields(view, settings, place))
    assert job_response(view, settings, place).body == model.model_dump_json().encode()
    assert job_out(view, settings, place) == model.model_dump(mode="json")


def test_the_fields_are_jobouts() -> None:
    assert list(job_fields(VIEWS[0], Settings())) == list(JobOut.model_fields)
