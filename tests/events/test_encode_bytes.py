"""`encode` splices the envelope's head as text: the bytes must be exactly those of the plain
recipe (a dict through ``json.dumps``, the time through strftime) for any id, source and time."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from jetgrid.events import Event, JobCompleted, JobStarted, JobSubmitted, decode, encode


def plain(event: Event, *, source: str, id: str, time: datetime) -> bytes:
    """The envelope as json.dumps writes it (the recipe encode must match)."""
    t = time if time.tzinfo else time.replace(tzinfo=UTC)
    head = json.dumps(
        {
            "specversion": "1.0",
            "id": id,
            "source": source,
            "type": event.type,
            "time": t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "datacontenttype": "application/json",
            "dataversion": event.version,
        },
        separators=(",", ":"),
    )
    data = event.model_dump_json(exclude={"type", "version"})
    return f'{head[:-1]},"data":{data}}}'.encode()


EVENTS = [
    JobStarted(job_id="j1", worker_id="w1", attempt=1, jobs_seq=3, tier_factor=0.5),
    JobCompleted(job_id="j1", worker_id="w1", attempt=2, output={"t": 'é"\\'}, duration_s=0.1),
    JobSubmitted(job_id="j1", model="m", pool="fast", prompt="hi"),
]
TIMES = st.one_of(
    st.datetimes(timezones=st.just(UTC)),
    st.datetimes(timezones=st.just(timezone(timedelta(hours=-5)))),
    st.datetimes(),  # naive: taken as UTC
)


@given(event=st.sampled_from(EVENTS), id=st.text(), source=st.text(min_size=1), time=TIMES)
def test_encode_writes_the_bytes_of_the_plain_recipe(
    event: Event, id: str, source: str, time: datetime
) -> None:
    if time.tzinfo is not None and time.utcoffset() and not 1 < time.year < 9999:
        return  # astimezone would leave the calendar; not a time anything publishes
    want = plain(event, source=source, id=id or "x", time=time)
    assert encode(event, source=source, id=id or "x", time=time) == want


def test_an_event_encoded_now_decodes_to_itself() -> None:
    for event in EVENTS:
        env = decode(encode(event, source="s"))
        assert env.event == event and env.time.tzinfo is not None
