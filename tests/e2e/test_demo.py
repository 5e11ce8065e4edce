"""`jetgrid demo` end to end, shortened: real workers, projector and NATS, the final summary."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from jetgrid.cli import main
from jetgrid.coordinator.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_short_demo_ends_by_itself_with_a_summary(settings: Settings) -> None:
    s = settings
    args = ["demo", "--nats-url", s.nats_url, "--subject-prefix", s.subject_prefix]
    args += ["--stream-prefix", s.stream_prefix, "--duration", "10", "--ping-interval", "0.05"]
    result = CliRunner().invoke(main, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    out = result.output
    print(out)
    assert "the demo's own projector" in out  # nothing else projects this test's streams
    assert "Summary after" in out
    for i in range(1, 5):
        assert f"-{i} " in out
    for word in ("99.5%", "98.0%", "92.0%", "85.0%", "succeeded", "latency", "jobs submitted"):
        assert word in out
    assert "Share of the jobs completed since every worker left probation" in out
    assert "expected share" in out


def test_a_bad_simulated_uptime_is_refused_naming_the_flag() -> None:
    result = CliRunner().invoke(
        main, ["worker", "--pool", "standard", "--model", "echo", "--simulate-uptime", "1.5"]
    )
    assert result.exit_code == 2
    assert "--simulate-uptime" in result.output and "'1.5'" in result.output
