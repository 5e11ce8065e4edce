"""A refusal by NATS permissions is told at once, in one line (issue 11, finding 8): against a
nats-server with the real role config."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from click.testing import CliRunner

from jetgrid.cli import main
from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.errors import PermissionDenied

pytestmark = pytest.mark.integration

# Long enough that only the refusal itself can end the call (the bound below only stops a hang).
NEVER_S = 3600.0


def client_env(provisioned: Any, **extra: str) -> dict[str, str]:
    s = provisioned.settings("client")
    return {"JETGRID_NATS_URL": s.nats_url, "JETGRID_NATS_USER": "client",
            "JETGRID_NATS_PASSWORD": provisioned.passwords["client"],
            "JETGRID_SUBJECT_PREFIX": "sec", "JETGRID_STREAM_PREFIX": "SEC_",
            "JETGRID_DATA_DIR": str(provisioned.data), **extra}  # fmt: skip


async def test_a_refused_call_ends_with_the_refusal_not_the_timeout(provisioned: Any) -> None:
    bus = await Bus.connect(
        provisioned.settings("client", nats_js_timeout_s=NEVER_S), name="test-client"
    )
    try:
        with pytest.raises(PermissionDenied, match=r"consumer\.list\.sec_jobs"):
            await asyncio.wait_for(bus.consumers_info("SEC_JOBS"), 60)
        # The refusal was attributed to that call; the connection still works.
        assert await bus.last_seq("SEC_JOBS") >= 0
    finally:
        await bus.close()


@pytest.mark.parametrize(
    ("args", "refused"),
    [
        (["pools"], ("$js.api.consumer.list.sec_jobs",)),
        # audit and replay read WORKERS and the rollups of its purged hours (projections.prelude)
        # at once: either refusal may come first.
        (["audit"], ("$js.api.stream.info.sec_workers", "$js.api.stream.info.sec_rollups")),
        (
            ["replay", "--quiet", "--db", "{tmp}/replay.db"],
            ("$js.api.stream.info.sec_workers", "$js.api.stream.info.sec_rollups"),
        ),
    ],
)
def test_a_command_refused_by_permissions_says_so_in_one_line(
    provisioned: Any, tmp_path: Any, args: list[str], refused: tuple[str, ...]
) -> None:
    args = [a.format(tmp=tmp_path) for a in args]
    result = CliRunner().invoke(main, args, env=client_env(provisioned))
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: NATS refused to ")
    assert any(f'permissions violation for publish to "{r}"' in lines[0] for r in refused)
    assert "run this as a NATS user whose role allows it" in lines[0]
    assert "Traceback" not in result.output
