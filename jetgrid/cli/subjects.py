"""`jetgrid subject` and `jetgrid model-token`: how pools and models map onto NATS subjects."""

from __future__ import annotations

import click

from jetgrid.cli.shared import (
    model_option,
    one_line_errors,
    pool_option,
    priority_option,
    settings_from,
)
from jetgrid.events import Subjects, encode_model


@click.command()
@pool_option("Pool the job goes to.", default="standard")
@model_option("Model name, e.g. llama3.2:1b.")
@click.option(
    "--prefix",
    "subject_prefix",
    default=None,
    help="Subject prefix. [env JETGRID_SUBJECT_PREFIX; default jetgrid]",
)
@priority_option("Priority queue (normal has no priority token).")
def subject(pool: str, model: str, subject_prefix: str | None, priority: str) -> None:
    """Print the NATS subject that submits a job for MODEL to POOL.

    Model names are encoded into one subject token: letters, digits and '-' stay, every other
    byte becomes '_' plus two hex digits (llama3.2:1b -> llama3_2E2_3A1b).
    """
    with one_line_errors():
        prefix = subject_prefix or settings_from().subject_prefix
        click.echo(Subjects(prefix).submit(pool, model, priority))


@click.command("model-token")
@click.argument("model")
def model_token(model: str) -> None:
    """Print the subject token a model name encodes to."""
    with one_line_errors():
        click.echo(encode_model(model))
