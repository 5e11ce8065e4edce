from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jetgrid.events import InvalidSubject, Subjects, check_id, decode_model, encode_model

TOKEN_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


@pytest.mark.parametrize(
    ("model", "token"),
    [
        ("echo", "echo"),
        ("llama3.2:1b", "llama3_2E2_3A1b"),
        ("my_model", "my_5Fmodel"),
        ("hf.co/org/m:q4", "hf_2Eco_2Forg_2Fm_3Aq4"),
        ("a b", "a_20b"),
        ("é", "_C3_A9"),
        ("*>", "_2A_3E"),
    ],
)
def test_model_encoding_examples(model: str, token: str) -> None:
    assert encode_model(model) == token
    assert decode_model(token) == model


@given(st.text(min_size=1, max_size=60).filter(lambda s: len(s.encode()) <= 200))
def test_model_encoding_round_trips_into_one_token(model: str) -> None:
    token = encode_model(model)
    assert set(token) <= TOKEN_CHARS
    assert "." not in token and "*" not in token and ">" not in token
    assert decode_model(token) == model


@given(st.text(min_size=1, max_size=20), st.text(min_size=1, max_size=20))
def test_encoding_is_injective(a: str, b: str) -> None:
    if a != b:
        assert encode_model(a) != encode_model(b)


@pytest.mark.parametrize("token", ["", "a.b", "x_2", "x_zz", "a b", "_C3"])
def test_decode_rejects_tokens_no_model_encodes_to(token: str) -> None:
    with pytest.raises(InvalidSubject):
        decode_model(token)


def test_empty_and_overlong_models_are_refused() -> None:
    with pytest.raises(InvalidSubject, match="empty"):
        encode_model("")
    with pytest.raises(InvalidSubject, match="at most"):
        encode_model("m" * 201)


def test_subject_builders_and_parsers_agree() -> None:
    s = Subjects("jetgrid")
    assert s.submit("fast", "llama3.2:1b") == "jetgrid.jobs.fast.llama3_2E2_3A1b"
    assert s.parse_submit("jetgrid.jobs.fast.llama3_2E2_3A1b") == ("fast", "llama3.2:1b")
    assert s.job_event("j1", "completed") == "jetgrid.job.j1.completed"
    assert s.parse_job_event("jetgrid.job.j1.completed") == ("j1", "completed")
    assert s.worker_event("w-1", "heartbeat") == "jetgrid.worker.w-1.heartbeat"
    assert s.parse_worker_event("jetgrid.worker.w-1.heartbeat") == ("w-1", "heartbeat")
    assert s.invalid("JOBS") == "jetgrid.invalid.JOBS"
    assert s.tokens("j1", "w-1") == "jetgrid.tokens.j1.w-1"
    assert s.parse_tokens("jetgrid.tokens.j1.w-1") == ("j1", "w-1")
    assert s.token_streams() == "jetgrid.tokens.*.*"
    assert s.submit_filter() == "jetgrid.jobs.*.*"
    assert s.job_events() == "jetgrid.job.*.>"
    assert s.job_events("j1") == "jetgrid.job.j1.>"


def test_a_worker_says_job_events_under_its_own_id() -> None:
    s = Subjects("jetgrid")
    subject = s.job_event("j1", "completed", "gpu-7")
    assert subject == "jetgrid.job.j1.completed.gpu-7"
    assert s.parse_job_event(subject) == ("j1", "completed")
    assert s.parse_job_event_by(subject) == ("j1", "completed", "gpu-7")
    assert s.parse_job_event_by("jetgrid.job.j1.cancel_requested") == (
        "j1",
        "cancel_requested",
        None,
    )
    assert s.job_event_stream_subjects() == ("jetgrid.job.*.*", "jetgrid.job.*.*.*")


@pytest.mark.parametrize(
    "subject",
    ["jetgrid.job.j1", "jetgrid.job.j1.completed.w1.extra", "jetgrid.job..completed", "x.job.j1.a"],
)
def test_job_event_parser_rejects_other_shapes(subject: str) -> None:
    with pytest.raises(InvalidSubject):
        Subjects("jetgrid").parse_job_event_by(subject)


def test_a_worker_id_must_be_one_token() -> None:
    with pytest.raises(InvalidSubject):
        Subjects("jetgrid").job_event("j1", "completed", "a.b")


def test_dotted_prefixes_work() -> None:
    s = Subjects("acme.grid")
    assert s.parse_submit(s.submit("heavy", "m:1")) == ("heavy", "m:1")


@pytest.mark.parametrize(
    "subject",
    ["other.jobs.fast.m", "jetgrid.jobs.fast", "jetgrid.jobs.fast.m.extra", "jetgrid.jobs..m"],
)
def test_parse_rejects_foreign_subjects(subject: str) -> None:
    with pytest.raises(InvalidSubject):
        Subjects("jetgrid").parse_submit(subject)


@pytest.mark.parametrize("bad", ["", "a.b", "a*", "x" * 129, "sp ace", "a>"])
def test_ids_must_be_single_tokens(bad: str) -> None:
    with pytest.raises(InvalidSubject):
        check_id(bad)


def test_bad_prefix_is_refused() -> None:
    with pytest.raises(InvalidSubject):
        Subjects("has space")


def test_a_remembered_submission_parse_is_its_own_grammars_and_refusals_stay_refused() -> None:
    a, b = Subjects("a"), Subjects("b")
    assert a.parse_submit_lane("a.jobs.standard.echo") == ("standard", "echo", "normal", None, None)
    assert a.parse_submit_lane("a.jobs.standard.echo")[1] == "echo"  # the remembered answer
    with pytest.raises(InvalidSubject):
        b.parse_submit_lane("a.jobs.standard.echo")  # another prefix's subject, not a's answer
    for _ in range(2):
        with pytest.raises(InvalidSubject):
            a.parse_submit_lane("a.jobs.standard.echo.urgent")


@given(st.text(min_size=1, max_size=40))
def test_encode_model_is_the_bytewise_encoding(model: str) -> None:
    safe = set(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")
    want = "".join(chr(b) if b in safe else f"_{b:02X}" for b in model.encode())
    assert encode_model(model) == want
    assert encode_model("llama3-8B") == "llama3-8B"
