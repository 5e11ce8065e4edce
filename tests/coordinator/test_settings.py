from __future__ import annotations

from pathlib import Path

import pytest

from jetgrid.coordinator.settings import Settings
from jetgrid.events import ConfigError


def test_defaults() -> None:
    s = Settings.from_env({})
    assert s.nats_url == "nats://127.0.0.1:4222"
    assert (s.gateway_port, s.nats_port, s.workers) == (8080, 4222, 2)
    assert s.data_dir == Path(".jetgrid")
    assert s.pools == ("fast", "standard", "heavy")
    assert s.log_level == "warning"


def test_env_then_flags_take_precedence() -> None:
    env = {"JETGRID_GATEWAY_PORT": "9000", "JETGRID_POOLS": "a, b", "JETGRID_LOG_LEVEL": "INFO"}
    s = Settings.from_env(env)
    assert (s.gateway_port, s.pools, s.log_level) == (9000, ("a", "b"), "info")
    s = Settings.from_env(env, gateway_port=9100, pools=None)
    assert s.gateway_port == 9100 and s.pools == ("a", "b")


def test_bad_values_are_quoted_with_their_variable() -> None:
    with pytest.raises(ConfigError, match=r"JETGRID_GATEWAY_PORT\) has value 'eighty'"):
        Settings.from_env({"JETGRID_GATEWAY_PORT": "eighty"})
    with pytest.raises(ConfigError, match="JETGRID_NATS_PORT"):
        Settings.from_env({}, nats_port=70000)


def test_unknown_fields_and_unrelated_env_are_handled() -> None:
    s = Settings.from_env({"JETGRID_NOPE": "1", "HOME": "/root"})
    assert s == Settings()
    with pytest.raises(ConfigError):
        Settings().replace(colour="blue")


def test_credentials_are_secret_and_servers_split() -> None:
    s = Settings.from_env(
        {"JETGRID_NATS_PASSWORD": "hunter2", "JETGRID_NATS_URL": "nats://a:1, nats://b:2"}
    )
    assert "hunter2" not in repr(s)
    assert s.nats_password is not None and s.nats_password.get_secret_value() == "hunter2"
    assert s.servers == ["nats://a:1", "nats://b:2"]


def test_derived_names() -> None:
    s = Settings(subject_prefix="t9", stream_prefix="T9_")
    assert s.subjects.submit("fast", "m") == "t9.jobs.fast.m"
    assert s.streams.jobs == "T9_JOBS"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RATE_LIMIT_PER_S", "inf"),
        ("RATE_LIMIT_PER_S", "nan"),
        ("RATE_LIMIT_BURST", "inf"),
        ("UNSERVED_MODEL_WINDOW_S", "-1"),
        ("UNSERVED_MODEL_WINDOW_S", "nan"),
    ],
)
def test_rates_and_windows_must_be_finite(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"JETGRID_{name}\\) has value '{value}'"):
        Settings.from_env({f"JETGRID_{name}": value})


def test_the_unserved_model_window_is_a_setting() -> None:
    assert Settings().unserved_model_window_s == 600.0
    env = {"JETGRID_UNSERVED_MODEL_WINDOW_S": "30"}
    assert Settings.from_env(env).unserved_model_window_s == 30.0


def test_subjects_and_streams_are_built_once_per_prefix() -> None:
    s = Settings(subject_prefix="t1", stream_prefix="T1_")
    assert s.subjects is s.subjects and s.streams is s.streams
    assert s.subjects is Settings(subject_prefix="t1").subjects
    assert (s.subjects.prefix, s.streams.prefix) == ("t1", "T1_")


def test_the_shared_subjects_leave_equality_hashing_dumps_and_copies_alone() -> None:
    a, b = Settings(subject_prefix="t2"), Settings(subject_prefix="t2")
    dump = a.model_dump()
    _ = (a.subjects, a.streams)  # read on one of them only
    assert a == b and hash(a) == hash(b)
    assert a.model_dump() == dump == b.model_dump()
    assert "subjects" not in dump and "streams" not in dump
    assert a.model_copy() == a and a.model_copy().subjects is a.subjects
    other = a.model_copy(update={"subject_prefix": "t3", "stream_prefix": "T3_"})
    assert (other.subjects.prefix, other.streams.prefix) == ("t3", "T3_")
    replaced = a.replace(subject_prefix="t4")
    assert replaced.subjects.prefix == "t4" and replaced != a
