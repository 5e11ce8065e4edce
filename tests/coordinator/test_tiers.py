"""Tier policy: thresholds, probation, hysteresis, parsing and the plain-dict view."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jetgrid.coordinator.tiers import DEFAULT_POLICY, PROBATION, Tier, TierPolicy, load_policy
from jetgrid.events.errors import ConfigError

POLICY = DEFAULT_POLICY


@pytest.mark.parametrize(
    ("uptime", "tier", "factor"),
    [
        (1.0, "full", 1.0),
        (0.995, "full", 1.0),
        (0.99, "full", 1.0),
        (99 / 100, "full", 1.0),
        (693 / 700, "full", 1.0),
        (0.98999, "half", 0.5),
        (0.96, "half", 0.5),
        (0.95, "half", 0.5),
        (0.94999, "tenth", 0.1),
        (0.92, "tenth", 0.1),
        (0.90, "tenth", 0.1),
        (0.89999, "none", 0.0),
        (0.5, "none", 0.0),
        (0.0, "none", 0.0),
    ],
)
def test_default_thresholds_are_inclusive_at_the_bottom(
    uptime: float, tier: str, factor: float
) -> None:
    got = POLICY.tier_for(uptime, observed_slots=1_000)
    assert (got.name, got.factor) == (tier, factor)
    assert POLICY.factor(tier) == factor


@pytest.mark.parametrize(
    ("uptime", "slots", "tier"),
    [
        (None, 0, PROBATION),
        (None, 10_000, PROBATION),
        (1.0, 0, PROBATION),
        (1.0, 99, PROBATION),
        (0.5, 99, PROBATION),  # a few misses among the first slots are noise, not a verdict
        (1.0, 100, "full"),
        (0.5, 100, "none"),
        (0.97, 100, "half"),
    ],
)
def test_new_workers_are_on_probation_until_enough_slots(
    uptime: float | None, slots: int, tier: str
) -> None:
    assert POLICY.tier_for(uptime, slots).name == tier


def test_probation_tier_has_its_own_factor() -> None:
    assert POLICY.probation == Tier(PROBATION, 0.0, 0.5)
    assert POLICY.factor(PROBATION) == 0.5
    strict = TierPolicy(POLICY.tiers, probation_slots=20, probation_factor=0.1)
    assert strict.tier_for(1.0, 19) == Tier(PROBATION, 0.0, 0.1)
    assert strict.tier_for(1.0, 20).name == "full"


def test_lookups_build_nothing_per_call() -> None:
    """tier_for runs on every ping: the probation tier and the names are built once per
    policy, and the derived fields leave equality, hashing and repr as they were."""
    strict = TierPolicy(POLICY.tiers, probation_slots=20, probation_factor=0.1)
    assert strict.tier_for(None, 0) is strict.tier_for(1.0, 19) is strict.probation
    assert strict.names is strict.names == ("full", "half", "tenth", "none", PROBATION)
    same = TierPolicy(POLICY.tiers, probation_slots=20, probation_factor=0.1)
    assert same == strict and hash(same) == hash(strict) and repr(same) == repr(strict)
    assert "_probation" not in repr(strict) and strict != POLICY


def test_probation_can_be_turned_off() -> None:
    off = TierPolicy(POLICY.tiers, probation_slots=0)
    assert off.tier_for(0.5, 1).name == "none"
    assert off.tier_for(None, 0).name == PROBATION  # nothing observed yet: nothing to judge


@pytest.mark.parametrize(
    ("current", "uptime", "expected"),
    [
        ("half", 0.99, "half"),  # climbing needs 0.99 + 0.005
        ("half", 0.9949, "half"),
        ("half", 0.995, "full"),
        ("tenth", 0.991, "half"),  # climbs as far as the margin allows
        ("tenth", 0.952, "tenth"),
        ("full", 0.98, "half"),  # falling uses the plain thresholds
        ("full", 0.9, "tenth"),
        ("none", 1.0, "full"),
        (PROBATION, 0.99, "full"),
        (None, 0.99, "full"),
    ],
)
def test_hysteresis_damps_climbing_only(current: str | None, uptime: float, expected: str) -> None:
    policy = TierPolicy(POLICY.tiers, probation_slots=0, hysteresis=0.005)
    assert policy.tier_for(uptime, 500, current=current).name == expected


@given(st.floats(0, 1), st.floats(0, 1))
def test_more_uptime_never_means_a_smaller_factor(a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    assert POLICY.tier_for(lo, 500).factor <= POLICY.tier_for(hi, 500).factor


def test_compact_string_round_trip() -> None:
    assert TierPolicy.from_string("0.99:1.0,0.95:0.5,0.90:0.1,0:0") == DEFAULT_POLICY
    assert TierPolicy.from_string(DEFAULT_POLICY.to_string()) == DEFAULT_POLICY
    assert TierPolicy.from_string(" 0:0 , 0.95:0.5, 0.9:0.1,0.99:1 ") == DEFAULT_POLICY


def test_compact_string_names_and_defaults() -> None:
    p = TierPolicy.from_string("gold=0.999:1,silver=0.9:0.25,0:0", probation_slots=7)
    assert [t.name for t in p.tiers] == ["gold", "silver", "none"]
    assert p.probation_slots == 7
    assert p.tier_for(0.95, 7).name == "silver"
    # unnamed tiers with factors outside the defaults (or a repeated default) get tier<i>
    p = TierPolicy.from_string("0.99:1,0.98:1,0.5:0.3,0:0")
    assert [t.name for t in p.tiers] == ["full", "tier1", "tier2", "none"]


@pytest.mark.parametrize(
    ("spec", "quoted"),
    [
        ("", "''"),
        ("   ", "'   '"),
        ("0.99", "'0.99'"),
        ("0.99:1,x:y,0:0", "'x:y'"),
        ("0.99:1.5,0:0", "1.5"),
        ("1.2:1,0:0", "1.2"),
        ("0.99:-0.1,0:0", "-0.1"),
        ("nan:1,0:0", "nan"),
        ("0.99:1,0.95:0.5", "0.95"),  # no tier starting at 0
        ("0.9:0.5,0.9:0.1,0:0", "0.9"),
        ("0.99:0.5,0.95:1,0:0", "0.5"),  # a more reliable tier paying less
        ("a=0.99:1,a=0.5:0.5,0:0", "'a'"),
        ("probation=0.5:1,0:0", "'probation'"),
        ("Bad Name=0.5:1,0:0", "'Bad Name'"),
    ],
)
def test_invalid_strings_raise_config_error_quoting_the_value(spec: str, quoted: str) -> None:
    with pytest.raises(ConfigError) as err:
        TierPolicy.from_string(spec)
    assert quoted in str(err.value)


@pytest.mark.parametrize(
    ("kwargs", "quoted"),
    [
        ({"probation_slots": -1}, "-1"),
        ({"probation_slots": 1.5}, "1.5"),
        ({"probation_factor": 2}, "2"),
        ({"hysteresis": -0.1}, "-0.1"),
    ],
)
def test_invalid_probation_settings(kwargs: dict[str, float], quoted: str) -> None:
    with pytest.raises(ConfigError, match=quoted):
        TierPolicy(DEFAULT_POLICY.tiers, **kwargs)  # type: ignore[arg-type]


def test_empty_policy_is_refused() -> None:
    with pytest.raises(ConfigError, match="no tiers"):
        TierPolicy(())


TOML = """
[tiers]
probation_slots = 30
probation_factor = 0.25
hysteresis = 0.002

[[tiers.tier]]
name = "full"
min_uptime = 0.99
factor = 1.0

[[tiers.tier]]
name = "some"
min_uptime = 0.9
factor = 0.3

[[tiers.tier]]
min_uptime = 0
factor = 0
"""


def test_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "tiers.toml"
    path.write_text(TOML)
    p = TierPolicy.from_toml(path)
    assert p.tiers == (Tier("full", 0.99, 1.0), Tier("some", 0.9, 0.3), Tier("none", 0.0, 0.0))
    assert (p.probation_slots, p.probation_factor, p.hysteresis) == (30, 0.25, 0.002)
    assert load_policy(path) == p
    # the same keys at the top level work too
    top = TOML.replace("[tiers]\n", "").replace("[[tiers.tier]]", "[[tier]]")
    assert TierPolicy.from_toml_text(top) == p


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        ("[tiers]\nprobation_slots = 3\n", "None"),
        ("[tiers]\nbogus = 1\n[[tiers.tier]]\nmin_uptime = 0\nfactor = 0\n", "'bogus'"),
        ("[[tier]]\nmin_uptime = 0\n", "needs both"),
        ("[[tier]]\nmin_uptime = 0\nfactor = 0\ncolour = 'red'\n", "colour"),
        ("[[tier]]\nmin_uptime = 'high'\nfactor = 0\n", "'high'"),
        ("[[tier]]\nmin_uptime = 0\nfactor = true\n", "True"),
        ("tiers = 3\n", "3"),
        ("[tiers\n", "not valid TOML"),
    ],
)
def test_invalid_toml(text: str, quoted: str) -> None:
    with pytest.raises(ConfigError) as err:
        TierPolicy.from_toml_text(text)
    assert quoted in str(err.value)


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=r"nope\.toml"):
        TierPolicy.from_toml(missing)


def test_load_policy_sources_and_overrides(tmp_path: Path) -> None:
    assert load_policy() == DEFAULT_POLICY
    assert load_policy(spec="0.5:1,0:0").tiers == (Tier("full", 0.5, 1.0), Tier("none", 0.0, 0.0))
    p = load_policy(probation_slots=5, probation_factor=0.1, hysteresis=0.01)
    assert (p.tiers, p.probation_slots, p.probation_factor, p.hysteresis) == (
        DEFAULT_POLICY.tiers,
        5,
        0.1,
        0.01,
    )
    path = tmp_path / "t.toml"
    path.write_text(TOML)
    with pytest.raises(ConfigError, match="use one"):
        load_policy(path, "0:0")


def test_as_dict_is_plain_json() -> None:
    d = DEFAULT_POLICY.as_dict()
    assert json.loads(json.dumps(d)) == d
    assert d == {
        "tiers": [
            {"name": "full", "min_uptime": 0.99, "max_uptime": None, "factor": 1.0},
            {"name": "half", "min_uptime": 0.95, "max_uptime": 0.99, "factor": 0.5},
            {"name": "tenth", "min_uptime": 0.9, "max_uptime": 0.95, "factor": 0.1},
            {"name": "none", "min_uptime": 0.0, "max_uptime": 0.9, "factor": 0.0},
        ],
        "probation": {"name": "probation", "slots": 100, "factor": 0.5},
        "hysteresis": 0.0,
    }


def test_lookup_by_name() -> None:
    assert DEFAULT_POLICY.names == ("full", "half", "tenth", "none", PROBATION)
    assert DEFAULT_POLICY.tier_named("tenth") == Tier("tenth", 0.9, 0.1)
    with pytest.raises(KeyError):
        DEFAULT_POLICY.tier_named("platinum")
