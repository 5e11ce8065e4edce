"""`jetgrid worker`: one worker that registers, pings and runs the jobs of its pool and models."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import click

from jetgrid.cli.shared import (
    models_option,
    nats_options,
    pool_option,
    run_async,
    settings_from,
    settle_heap,
    setup_logging,
)
from jetgrid.events import JetgridError


@click.command()
@nats_options
@pool_option("Pool to serve (fast, standard, heavy, ...).", required=True)
@models_option("Model to serve (repeatable).")
@click.option(
    "--backend",
    type=click.Choice(["echo", "ollama", "openai"]),
    default="echo",
    show_default=True,
    help="What runs the jobs: echo (no model, for tests and demos), an Ollama server, or any OpenAI-compatible server (vLLM, SGLang, llama.cpp's server, ...).",
)
@click.option(
    "--ollama-host",
    default="http://127.0.0.1:11434",
    show_default=True,
    help="Ollama backend: the Ollama server's URL.",
)
@click.option(
    "--pull",
    is_flag=True,
    help="Ollama backend: pull a --model the server does not have at start (progress in the log).",
)
@click.option(
    "--base-url",
    default="http://127.0.0.1:8080/v1",
    show_default=True,
    help="OpenAI backend: the server's API root (a URL without a path gets /v1).",
)
@click.option(
    "--api-key",
    envvar="JETGRID_OPENAI_API_KEY",
    help="OpenAI backend: the key the server wants, sent as 'Authorization: Bearer'. [env JETGRID_OPENAI_API_KEY]",
)
@click.option(
    "--allow-python",
    is_flag=True,
    help="Also run remote Python functions (@jetgrid.remote) of this pool: arbitrary code, each call in a fresh bubblewrap sandbox (no network, no host files, no environment) with time, memory and output limits. Needs bwrap (Debian package bubblewrap). Off by default.",
)
@click.option(
    "--unsafe-python-no-sandbox",
    is_flag=True,
    envvar="JETGRID_UNSAFE_PYTHON_NO_SANDBOX",
    help="With --allow-python: run functions WITHOUT the bubblewrap sandbox, as this worker's user (they can read its files and reach its network). Only where every submitter is trusted.",
)
@click.option(
    "--python-timeout",
    type=float,
    default=600.0,
    show_default=True,
    help="With --allow-python: most seconds one function may run.",
)
@click.option(
    "--python-memory-mb",
    type=int,
    default=4096,
    show_default=True,
    help="With --allow-python: address-space limit of each function's process (MiB).",
)
@click.option("--concurrency", default=1, show_default=True, help="Most jobs run at once.")
@click.option(
    "--worker-id",
    help="Stable identity of this worker (its uptime history follows it). [default: host name]",
)
@click.option(
    "--echo-latency",
    type=float,
    default=0.0,
    show_default=True,
    help="Echo backend: seconds each job takes.",
)
@click.option(
    "--echo-token-delay",
    type=float,
    default=0.0,
    show_default=True,
    help="Echo backend: seconds between streamed words.",
)
@click.option(
    "--heartbeat-interval",
    "heartbeat_interval_s",
    type=float,
    help="Seconds between pings. [env JETGRID_HEARTBEAT_INTERVAL_S; default 5]",
)
@click.option(
    "--pull-rate",
    type=float,
    help="Base pull rate in jobs/s, before the tier factor; 0 = no limit but concurrency (the "
    "factor then only stops pulls at 0). [env JETGRID_PULL_RATE; default 0]",
)
@click.option(
    "--pull-burst",
    type=float,
    help="Jobs the budget may grant at once after idling. [env JETGRID_PULL_BURST; default max(1, rate)]",
)
@click.option(
    "--fallback-wait",
    "fallback_wait_s",
    type=float,
    help="While its tier holds it back, take jobs no other worker took for this many seconds "
    "times the tier's rank (full 1x ... none 4x); 0 = strict tiers. "
    "[env JETGRID_FALLBACK_WAIT_S; default 5]",
)
@click.option(
    "--simulate-uptime",
    help="Pretend to be an unreliable machine: miss or fail pings so that this share of them "
    "is healthy, e.g. 0.92 or 92%. Reproducible (see --simulate-seed).",
)
@click.option(
    "--simulate-seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of the simulated schedule: same seed, same pattern of missed and failed pings.",
)
@click.option(
    "--burst",
    is_flag=True,
    help="Exit once the pool's consumers are empty (for batch runs and tests).",
)
@click.option(
    "--drain-grace",
    type=float,
    default=30.0,
    show_default=True,
    help="On SIGTERM, seconds to finish held jobs before handing them back.",
)
@click.option(
    "--dead-letters/--no-dead-letters",
    default=True,
    show_default=True,
    help="Also watch for jobs JetStream gave up on and mark them dead (any number may watch).",
)
@run_async
async def worker(
    pool: str,
    models: tuple[str, ...],
    backend: str,
    concurrency: int,
    worker_id: str | None,
    echo_latency: float,
    echo_token_delay: float,
    burst: bool,
    drain_grace: float,
    ollama_host: str,
    pull: bool,
    base_url: str,
    api_key: str | None,
    allow_python: bool,
    python_timeout: float,
    python_memory_mb: int,
    unsafe_python_no_sandbox: bool,
    simulate_uptime: str | None,
    simulate_seed: int,
    dead_letters: bool,
    **flags: Any,
) -> None:
    """Run one worker: register, ping, and run jobs of (POOL, MODEL) from NATS.

    With --backend ollama, jobs run on the Ollama server at --ollama-host; the worker reports
    the server's loaded and available models in its pings and takes jobs for loaded models
    first (cold models only when their jobs wait too long or pile up).

    With --backend openai, jobs run on the OpenAI-compatible server at --base-url (chat,
    completions, embeddings, streamed); its models come from its /v1/models.

    Binds to the durable pull consumer of each (pool, model), creating it if missing. SIGTERM
    or Ctrl-C drains it: it stops pulling, finishes what it holds (up to --drain-grace),
    deregisters and exits 0.
    """
    from jetgrid.coordinator.aio import ready_or_raise
    from jetgrid.worker.agent import Worker, WorkerOptions, default_worker_id
    from jetgrid.worker.backends.choose import make_backend
    from jetgrid.worker.simulate import parse_uptime

    settings = settings_from(**flags)
    setup_logging(settings)
    if allow_python and "python" not in models:
        models = (*models, "python")
    if not models:
        raise click.UsageError("Give at least one --model (or --allow-python).")
    try:
        uptime = None if simulate_uptime is None else parse_uptime(simulate_uptime)
    except JetgridError as exc:
        raise click.BadParameter(str(exc), param_hint="--simulate-uptime") from exc
    try:
        chosen = make_backend(
            backend,
            models=[m for m in models if m != "python"],
            echo_latency=echo_latency,
            echo_token_delay=echo_token_delay,
            ollama_host=ollama_host,
            pull=pull,
            allow_python=allow_python,
            data_dir=settings.data_dir,
            python_timeout=python_timeout,
            python_memory_mb=python_memory_mb,
            python_unsandboxed=unsafe_python_no_sandbox,
            base_url=base_url,
            api_key=api_key,
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--base-url") from exc
    agent = Worker(
        settings,
        WorkerOptions(
            pool=pool,
            models=models,
            worker_id=worker_id or default_worker_id(),
            concurrency=concurrency,
            burst=burst,
            drain_grace_s=drain_grace,
            dead_letters=dead_letters,
            simulate_uptime=uptime,
            simulate_seed=simulate_seed,
        ),
        chosen,
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, agent.stop)
    running = asyncio.create_task(agent.run(), name=f"worker-{agent.id}")
    await ready_or_raise(agent.ready, running)
    settle_heap()
    await running
    click.echo(repr(agent), err=True)
