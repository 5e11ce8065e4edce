"""The `jetgrid` command line. Every setting is a flag, an environment variable
(JETGRID_<NAME>) or a default, in that order of precedence.

One module per command or command family; what they share (settings, logging, error
handling, options) lives in jetgrid.cli.shared. Only this module puts them together: the
commands never import it, so each imports on its own.
"""

from __future__ import annotations

from typing import Any

import click

from jetgrid.cli import (
    archive,
    audit,
    cancel,
    credentials,
    deadletter,
    demo,
    gateway,
    keys,
    pools,
    projector,
    provision,
    replay,
    subjects,
    submit,
    up,
    usage,
    webhooks,
    worker,
)
from jetgrid.cli.shared import one_line_errors

__all__ = ["main"]


class JetgridGroup(click.Group):
    """The `jetgrid` group: whichever command fails with a jetgrid error or a refused file, the
    user reads one `Error:` line, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        with one_line_errors():
            return super().invoke(ctx)


@click.group(
    cls=JetgridGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(package_name="jetgrid")
def main() -> None:
    """jetgrid: a GPU job broker for ML inference, event-sourced on NATS JetStream.

    Start here: `jetgrid up` runs NATS, a gateway and two echo workers on this machine.
    Then submit a job with `jetgrid submit --model echo --prompt hi --wait 10`, or over HTTP.
    """


main.add_command(up.up)
main.add_command(worker.worker)
main.add_command(gateway.gateway)
main.add_command(provision.provision)
main.add_command(subjects.subject)
main.add_command(submit.submit)
main.add_command(subjects.model_token)
main.add_command(keys.keys)
main.add_command(pools.pools)
main.add_command(projector.projector)
main.add_command(replay.replay)
main.add_command(audit.audit)
main.add_command(archive.archive)
main.add_command(demo.demo)
main.add_command(credentials.nats_config)
main.add_command(credentials.worker_credentials)
main.add_command(credentials.credentials)
main.add_command(cancel.cancel)
main.add_command(deadletter.deadletter)
main.add_command(webhooks.webhooks)
main.add_command(usage.usage)
