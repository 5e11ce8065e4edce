"""The echo backend: a deterministic output derived from the input, with optional latency.

Tests and benchmarks check every result against `expected_output(job)`. An input of
``{"fail": "transient"}`` or ``{"fail": "permanent"}`` makes the job fail that way, and
``{"sleep": seconds}`` overrides the latency for one job, so failure and timing paths can be
exercised end to end without a GPU.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

from events import JobSubmitted
from worker.backends.base import Result, RunContext
from worker.errors import PermanentError, TransientError


def job_text(job: JobSubmitted) -> str:
    if job.prompt is not None:
        return job.prompt
    inp = job.input or {}
    messages = inp.get("messages")
    if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
        return str(messages[-1].get("content", ""))
    return json.dumps(inp, sort_keys=True, separators=(",", ":"))


def expected_output(job: JobSubmitted) -> dict[str, Any]:
    """What the echo backend returns for `job` (used by tests and benchmarks to check results)."""
    text = job_text(job)
    return {
        "response": text,
        "sha256": hashlib.sha256(f"{job.model}\n{text}".encode()).hexdigest(),
    }


class EchoBackend:
    name = "echo"

    def __init__(self, latency_s: float = 0.0, token_delay_s: float = 0.0) -> None:
        self.latency_s = latency_s
        self.token_delay_s = token_delay_s

    def serves(self, model: str) -> bool:
        return True

    async def run(self, job: JobSubmitted, ctx: RunContext) -> Result:
        inp = job.input or {}
        fail = inp.get("fail")
        if fail == "transient":
            raise TransientError("echo: asked to fail transiently")
        if fail == "permanent":
            raise PermanentError("echo: asked to fail permanently", error_type="bad_input")
        delay = inp.get("sleep", self.latency_s)
        if isinstance(delay, int | float) and delay > 0:
            await asyncio.sleep(float(delay))
        out = expected_output(job)
        words = out["response"].split(" ")
        if self.token_delay_s > 0:  # stream the response word by word, as an LLM would
            for i, w in enumerate(words):
                await asyncio.sleep(self.token_delay_s)
                await ctx.emit(w if i == 0 else " " + w)
        n = len(words)
        return Result(
            output=out,
            usage={"prompt_tokens": n, "completion_tokens": n, "total_tokens": 2 * n},
        )

    async def close(self) -> None:
        return None
