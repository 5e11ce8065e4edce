"""The `jetgrid` command line. Every setting is a flag, an environment variable
(JETGRID_<NAME>) or a default, in that order of precedence."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import signal
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from jetgrid.coordinator.settings import Settings
from jetgrid.events import JetgridError, JobSubmitted, Subjects, encode_model
from jetgrid.events.addressing import Speaker, event_name

F = Callable[..., Any]


def _settings(**flags: Any) -> Settings:
    return Settings.from_env(os.environ, **flags)


def nats_options(f: F) -> F:
    """Connection flags shared by every command that talks to NATS."""
    options = [
        click.option("--nats-url", help="NATS server URL(s), comma-separated. [env JETGRID_NATS_URL; default nats://127.0.0.1:4222]"),
        click.option("--nats-user", help="NATS user name. [env JETGRID_NATS_USER]"),
        click.option("--nats-password", help="NATS password. [env JETGRID_NATS_PASSWORD]"),
        click.option("--nats-token", help="NATS auth token. [env JETGRID_NATS_TOKEN]"),
        click.option("--nats-creds", type=click.Path(dir_okay=False, path_type=Path), help="NATS credentials file (JWT + nkey). [env JETGRID_NATS_CREDS]"),
        click.option("--nats-tls-ca", type=click.Path(dir_okay=False, path_type=Path), help="CA certificate to verify the NATS server. [env JETGRID_NATS_TLS_CA]"),
        click.option("--nats-tls-cert", type=click.Path(dir_okay=False, path_type=Path), help="Client certificate for mutual TLS. [env JETGRID_NATS_TLS_CERT]"),
        click.option("--nats-tls-key", type=click.Path(dir_okay=False, path_type=Path), help="Client key for mutual TLS. [env JETGRID_NATS_TLS_KEY]"),
        click.option("--subject-prefix", help="First token of every jetgrid subject. [env JETGRID_SUBJECT_PREFIX; default jetgrid]"),
        click.option("--stream-prefix", help="Prepended to stream names (JOBS -> <prefix>JOBS). [env JETGRID_STREAM_PREFIX]"),
        click.option("-v", "--verbose", "log_level", flag_value="info", default=None, help="Log what each component does (default: warnings only)."),
        click.option("--log-json", is_flag=True, default=None, help="Log JSON lines instead of text."),
    ]  # fmt: skip
    for opt in reversed(options):
        f = opt(f)
    return f


def run_async(f: F) -> F:
    """Run an async command; turn jetgrid's errors into a one-line message and exit code 1."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return asyncio.run(f(*args, **kwargs))
        except JetgridError as exc:
            raise click.ClickException(str(exc)) from exc
        except KeyboardInterrupt:
            sys.exit(130)

    return wrapper


def _logging(settings: Settings) -> None:
    from jetgrid.logs import configure

    configure(settings.log_level, settings.log_json)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="jetgrid")
def main() -> None:
    """jetgrid: a GPU job broker for ML inference, event-sourced on NATS JetStream.

    Start here: `jetgrid up` runs NATS, a gateway and two echo workers on this machine.
    Then submit a job with `jetgrid submit --model echo --prompt hi --wait 10`, or over HTTP.
    """


@main.command()
@nats_options
@click.option(
    "--gateway-port",
    type=int,
    help="HTTP port of the gateway. [env JETGRID_GATEWAY_PORT; default 8080]",
)
@click.option("--gateway-host", help="Address the gateway listens on. [default 127.0.0.1]")
@click.option(
    "--nats-port",
    type=int,
    help="Client port of the embedded NATS server. [env JETGRID_NATS_PORT; default 4222]",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where NATS keeps its store and logs; kept between runs. [env JETGRID_DATA_DIR; default ./.jetgrid]",
)
@click.option(
    "--workers", type=int, help="Number of echo workers to run. [env JETGRID_WORKERS; default 2]"
)
@click.option("--pool", default="standard", show_default=True, help="Pool the workers serve.")
@click.option(
    "--model", "models", multiple=True, help="Model the workers serve (repeatable). [default echo]"
)
@click.option("--concurrency", default=4, show_default=True, help="Jobs each worker runs at once.")
@click.option(
    "--no-auth",
    is_flag=True,
    help="Run the embedded NATS without users (default: a user per role, passwords generated into --data-dir).",
)
@click.option(
    "--cluster",
    type=click.IntRange(1, 7),
    default=1,
    show_default=True,
    help="Run a JetStream cluster of this many nats-server nodes on loopback (client ports "
    "--nats-port and the next ones); streams get that many replicas unless "
    "JETGRID_STREAM_REPLICAS says otherwise.",
)
@run_async
async def up(
    pool: str,
    models: tuple[str, ...],
    concurrency: int,
    no_auth: bool,
    cluster: int,
    **flags: Any,
) -> None:
    """Run jetgrid on this machine: NATS, a gateway and echo workers, in the foreground.

    Starts a supervised nats-server (JetStream on, store under --data-dir, a NATS user per role
    with passwords generated into --data-dir/credentials.json), or with --cluster N a JetStream
    cluster of N nodes on loopback, unless --nats-url points at one you already run; creates the
    streams; starts a projector, the gateway and the workers; prints their URLs. Ctrl-C (or
    SIGTERM) stops everything cleanly and keeps the data, so the next `jetgrid up` resumes
    where this one stopped.
    """
    from jetgrid.embedded import UpOptions, run_up

    start_nats = flags.get("nats_url") is None and "JETGRID_NATS_URL" not in os.environ
    if cluster > 1 and "JETGRID_STREAM_REPLICAS" not in os.environ:
        flags["stream_replicas"] = min(cluster, 5)
    settings = _settings(**flags)
    _logging(settings)
    await run_up(
        settings,
        UpOptions(
            pool=pool,
            models=models or ("echo",),
            concurrency=concurrency,
            start_nats=start_nats,
            auth=not no_auth,
            env=os.environ,
            cluster=cluster,
        ),
        echo=click.echo,
    )


@main.command()
@nats_options
@click.option("--pool", required=True, help="Pool to serve (fast, standard, heavy, ...).")
@click.option("--model", "models", multiple=True, help="Model to serve (repeatable).")
@click.option(
    "--backend",
    type=click.Choice(["echo", "ollama"]),
    default="echo",
    show_default=True,
    help="What runs the jobs: echo (no model, for tests and demos) or an Ollama server.",
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
    "--allow-python",
    is_flag=True,
    help="Also run remote Python functions (@jetgrid.remote) of this pool: arbitrary code, each call in a fresh subprocess with time and memory limits. Off by default.",
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
    allow_python: bool,
    python_timeout: float,
    python_memory_mb: int,
    simulate_uptime: str | None,
    simulate_seed: int,
    dead_letters: bool,
    **flags: Any,
) -> None:
    """Run one worker: register, ping, and run jobs of (POOL, MODEL) from NATS.

    With --backend ollama, jobs run on the Ollama server at --ollama-host; the worker reports
    the server's loaded and available models in its pings and takes jobs for loaded models
    first (cold models only when their jobs wait too long or pile up).

    Binds to the durable pull consumer of each (pool, model), creating it if missing. SIGTERM
    or Ctrl-C drains it: it stops pulling, finishes what it holds (up to --drain-grace),
    deregisters and exits 0.
    """
    from jetgrid.worker.agent import Worker, WorkerOptions, default_worker_id
    from jetgrid.worker.backends.choose import make_backend
    from jetgrid.worker.simulate import parse_uptime

    settings = _settings(**flags)
    _logging(settings)
    if allow_python and "python" not in models:
        models = (*models, "python")
    if not models:
        raise click.UsageError("Give at least one --model (or --allow-python).")
    try:
        uptime = None if simulate_uptime is None else parse_uptime(simulate_uptime)
    except JetgridError as exc:
        raise click.BadParameter(str(exc), param_hint="--simulate-uptime") from exc
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
        make_backend(
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
        ),
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, agent.stop)
    await agent.run()
    click.echo(repr(agent), err=True)


@main.command()
@nats_options
@click.option(
    "--port", "gateway_port", type=int, help="HTTP port. [env JETGRID_GATEWAY_PORT; default 8080]"
)
@click.option(
    "--host", "gateway_host", help="Listen address. [env JETGRID_GATEWAY_HOST; default 127.0.0.1]"
)
@run_async
async def gateway(**flags: Any) -> None:
    """Run the HTTP gateway against a NATS server (streams must exist: see `provision`)."""
    from jetgrid.gateway.server import make_server

    settings = _settings(**flags)
    _logging(settings)
    server = make_server(settings)
    loop = asyncio.get_running_loop()

    def _stop() -> None:
        server.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, _stop)
    click.echo(f"gateway on {settings.gateway_url} (NATS {settings.nats_url})", err=True)
    await server.serve()


@main.command()
@nats_options
@click.option(
    "--update/--no-update",
    default=True,
    show_default=True,
    help="Update streams whose config drifted (else fail and show the drift).",
)
@run_async
async def provision(update: bool, **flags: Any) -> None:
    """Create or update jetgrid's streams (JOBS, JOB_EVENTS, WORKERS, INVALID, DEAD_LETTERS)
    and the tiers KV bucket. Idempotent."""
    from jetgrid.coordinator.bus import Bus
    from jetgrid.coordinator.provision import provision_deployment

    settings = _settings(**flags)
    _logging(settings)
    bus = await Bus.connect(settings, name="jetgrid-provision")
    try:
        report = await bus.call(
            provision_deployment(bus.js, settings, update=update),
            "provision streams (connect as the admin user)",
        )
    finally:
        await bus.close()
    for line in report.lines():
        click.echo(line)


@main.command()
@click.option("--pool", default="standard", show_default=True, help="Pool the job goes to.")
@click.option("--model", required=True, help="Model name, e.g. llama3.2:1b.")
@click.option(
    "--prefix",
    "subject_prefix",
    default=None,
    help="Subject prefix. [env JETGRID_SUBJECT_PREFIX; default jetgrid]",
)
@click.option(
    "--priority",
    type=click.Choice(["high", "normal", "low"]),
    default="normal",
    show_default=True,
    help="Priority queue (normal has no priority token).",
)
def subject(pool: str, model: str, subject_prefix: str | None, priority: str) -> None:
    """Print the NATS subject that submits a job for MODEL to POOL.

    Model names are encoded into one subject token: letters, digits and '-' stay, every other
    byte becomes '_' plus two hex digits (llama3.2:1b -> llama3_2E2_3A1b).
    """
    try:
        prefix = subject_prefix or _settings().subject_prefix
        click.echo(Subjects(prefix).submit(pool, model, priority))
    except JetgridError as exc:
        raise click.ClickException(str(exc)) from exc


@main.command()
@nats_options
@click.option("--model", required=True, help="Model to run.")
@click.option("--prompt", help="Text input.")
@click.option("--input", "input_json", help="Structured input as a JSON object.")
@click.option(
    "--pool",
    default=None,
    help="Pool; it must serve the model. [default: routed by the model's pool patterns]",
)
@click.option(
    "--id", "job_id", default=None, help="Job id (also the dedupe key). [default: random]"
)
@click.option(
    "--wait", type=float, default=None, help="Wait up to this many seconds for the result."
)
@click.option(
    "--priority",
    type=click.Choice(["high", "normal", "low"]),
    default="normal",
    show_default=True,
    help="Within its pool, higher-priority jobs start first when the pool is backlogged.",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=float,
    default=None,
    help="Seconds the job may run (capped by the pool).",
)
@run_async
async def submit(
    model: str,
    prompt: str | None,
    input_json: str | None,
    pool: str | None,
    job_id: str | None,
    wait: float | None,
    priority: str,
    timeout_s: float | None,
    **flags: Any,
) -> None:
    """Submit a job straight to NATS and print its id (and, with --wait, its outcome as JSON)."""
    from jetgrid.coordinator.bus import Bus

    settings = _settings(**flags)
    _logging(settings)
    try:
        data = json.loads(input_json) if input_json else None
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--input") from exc
    if prompt is None and data is None:
        raise click.UsageError("Give --prompt or --input.")
    from jetgrid.coordinator.routing import RouteError, route_job

    try:
        pool = route_job(settings.pool_configs(), model=model, pool=pool)
    except RouteError as exc:
        raise click.BadParameter(str(exc), param_hint=f"--{exc.field}") from exc
    job = JobSubmitted(
        job_id=job_id or uuid.uuid4().hex,
        model=model,
        pool=pool,
        prompt=prompt,
        input=data,
        submitter="cli",
        priority=priority,  # type: ignore[arg-type]
        timeout_s=timeout_s,
    )
    bus = await Bus.connect(settings, name="jetgrid-submit")
    try:
        async with bus.follow_job(job.job_id) as follower:
            stored = await bus.store(job, Speaker.service("cli"))
            click.echo(json.dumps({"id": job.job_id, "seq": stored.seq, "status": "queued"}))
            if wait is None:
                return
            outcome = await follower.outcome(wait)
    finally:
        await bus.close()
    if outcome is None:
        raise click.ClickException(f"No outcome for job {job.job_id} within {wait} s.")
    fields = outcome.event.model_dump(mode="json", exclude={"type", "version", "job_id"})
    name = event_name(outcome.event)
    click.echo(json.dumps({"id": job.job_id, "status": name, **fields}))
    if name != "completed":
        sys.exit(1)


@main.command("model-token")
@click.argument("model")
def model_token(model: str) -> None:
    """Print the subject token a model name encodes to."""
    try:
        click.echo(encode_model(model))
    except JetgridError as exc:
        raise click.ClickException(str(exc)) from exc


# Commands that live in their own modules (jetgrid/cli/<name>.py) register here, one per line.
from jetgrid.cli import audit as _audit  # noqa: E402
from jetgrid.cli import cancel as _cancel  # noqa: E402
from jetgrid.cli import credentials as _credentials  # noqa: E402
from jetgrid.cli import deadletter as _deadletter  # noqa: E402
from jetgrid.cli import demo as _demo  # noqa: E402
from jetgrid.cli import keys as _keys  # noqa: E402
from jetgrid.cli import nats_config as _nats_config  # noqa: E402
from jetgrid.cli import pools as _pools  # noqa: E402
from jetgrid.cli import projector as _projector  # noqa: E402
from jetgrid.cli import replay as _replay  # noqa: E402
from jetgrid.cli import worker_credentials as _worker_credentials  # noqa: E402

main.add_command(_keys.keys)
main.add_command(_pools.pools)
main.add_command(_projector.projector)
main.add_command(_replay.replay)
main.add_command(_audit.audit)
main.add_command(_demo.demo)
main.add_command(_nats_config.nats_config)
main.add_command(_worker_credentials.worker_credentials)
main.add_command(_credentials.credentials)
main.add_command(_cancel.cancel)
main.add_command(_deadletter.deadletter)
