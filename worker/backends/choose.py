"""Build the backend a worker was asked for on the command line."""

from __future__ import annotations

from pathlib import Path

from jetgrid.worker.backends.base import Backend
from jetgrid.worker.backends.echo import EchoBackend


def make_backend(
    kind: str,
    *,
    models: list[str],
    echo_latency: float = 0.0,
    echo_token_delay: float = 0.0,
    ollama_host: str = "http://127.0.0.1:11434",
    pull: bool = False,
    allow_python: bool = False,
    data_dir: Path = Path(".jetgrid"),
    python_timeout: float = 600.0,
    python_memory_mb: int = 4096,
    python_unsandboxed: bool = False,
    base_url: str = "http://127.0.0.1:8080/v1",
    api_key: str | None = None,
) -> Backend:
    """`kind` is "echo", "ollama" or "openai" (an OpenAI-compatible server at `base_url`);
    `allow_python` adds the python backend for python jobs."""
    backend: Backend
    if kind == "ollama":
        from jetgrid.worker.backends.ollama import OllamaBackend

        backend = OllamaBackend(ollama_host, models, pull=pull)
    elif kind == "openai":
        from jetgrid.worker.backends.openai import OpenAIBackend

        backend = OpenAIBackend(base_url, models, api_key=api_key)
    elif kind == "echo":
        backend = EchoBackend(latency_s=echo_latency, token_delay_s=echo_token_delay)
    else:
        raise ValueError(f"unknown backend {kind!r}; choose echo, ollama or openai")
    if allow_python:
        from jetgrid.worker.backends.python import PythonBackend, WithPython

        return WithPython(
            backend,
            PythonBackend(
                Path(data_dir),
                timeout_s=python_timeout,
                memory_mb=python_memory_mb,
                unsandboxed=python_unsandboxed,
            ),
        )
    return backend
