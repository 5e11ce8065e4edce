from __future__ import annotations

import fnmatch
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jetgrid.coordinator.pools import PoolConfig, Pools, default_pools, load_pools, parse_pools
from jetgrid.coordinator.settings import Settings
from jetgrid.events import ConfigError

POOLS = default_pools(("fast", "standard", "heavy"), "standard")


@pytest.mark.parametrize(
    ("model", "pool"),
    [
        ("llama3.2:1b", "fast"),
        ("qwen2.5:0.5b", "fast"),
        ("phi3-mini", "fast"),
        ("llama3.1:8b", "standard"),
        ("echo", "standard"),
        ("llama3.1:70b", "heavy"),
        ("deepseek-r1:671b", "heavy"),
    ],
)
def test_default_routing(model: str, pool: str) -> None:
    assert POOLS.route(model) == pool


@pytest.mark.parametrize(
    ("attempt", "delay"), [(1, 1.0), (2, 5.0), (3, 30.0), (4, 30.0), (9, 30.0)]
)
def test_backoff_repeats_its_last_step(attempt: int, delay: float) -> None:
    assert POOLS["standard"].retry_delay(attempt) == delay


def test_timeouts_are_capped_by_the_pool() -> None:
    fast = POOLS["fast"]
    assert fast.timeout_for(None) == 120.0
    assert fast.timeout_for(10) == 10
    assert fast.timeout_for(10_000) == 120.0


def test_file_overrides_defaults_in_routing_order() -> None:
    pools = parse_pools(
        """
default_pool = "gpu"
[[pool]]
name = "tiny"
models = ["echo*"]
ack_wait_s = 5
backoff_s = [0.1]
[[pool]]
name = "gpu"
max_deliver = 3
label = "kept"
""",
        default="standard",
    )
    assert pools.names == ("tiny", "gpu")
    assert pools.route("echo") == "tiny" and pools.route("llama3") == "gpu"
    assert pools["tiny"].ack_wait_s == 5 and pools["tiny"].retry_delay(3) == 0.1
    assert pools["gpu"].max_deliver == 3 and pools["gpu"].extra == {"label": "kept"}


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("not toml [", "not valid TOML"),
        ("x = 1", "at least one [[pool]]"),
        ('[[pool]]\nmodels = ["a"]', "needs a string 'name'"),
        ('[[pool]]\nname = "a.b"', "pool name 'a.b'"),
        ('[[pool]]\nname = "a"\nack_wait_s = 0', "ack_wait_s > 0"),
        ('[[pool]]\nname = "a"\nmax_deliver = "many"', "bad value"),
        ('[[pool]]\nname = "a"\nbackoff_s = [-1]', "negative backoff"),
        ('default_pool = "zzz"\n[[pool]]\nname = "a"', "Default pool 'zzz'"),
        ('[[pool]]\nname = "a"\n[[pool]]\nname = "a"', "unique"),
    ],
)
def test_bad_pool_files_say_what_is_wrong(text: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words.replace("[", r"\[").replace("]", r"\]")):
        parse_pools(text, default="a")


def test_settings_load_the_file_or_defaults(tmp_path: Path) -> None:
    assert Settings().pool_configs().names == ("fast", "standard", "heavy")
    f = tmp_path / "pools.toml"
    f.write_text('[[pool]]\nname = "only"\n')
    assert Settings(pools_file=f, default_pool="only").pool_configs().names == ("only",)
    with pytest.raises(ConfigError, match="Cannot read pools file"):
        load_pools(tmp_path / "missing.toml", ("a",), "a")


def test_unknown_pool_names_get_standard_defaults() -> None:
    pools = default_pools(("gpu-a100",), "gpu-a100")
    assert pools["gpu-a100"] == PoolConfig("gpu-a100")
    assert isinstance(pools, Pools)


_CHARS = "ab:.1*?[]!-\n"


@given(
    st.lists(st.text(alphabet=_CHARS, min_size=1, max_size=6), max_size=4),
    st.text(alphabet=_CHARS, max_size=8),
)
def test_matches_follows_fnmatchcase(patterns: list[str], model: str) -> None:
    cfg = PoolConfig("p", models=tuple(patterns))
    assert cfg.matches(model) == any(fnmatch.fnmatchcase(model, p) for p in patterns)
