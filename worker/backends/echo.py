"""The echo backend: a deterministic output derived from the input, with optional latency.

Tests and benchmarks check every result against `expected_output(job)`. An input of
``{"fail": "transient"}`` or ``{"fail": "permanent"}`` makes the job fail that way, and
``{"sleep": seconds}`` overrides the latency for one job, so failure and timing paths can be
exercised end to end without a GPU.

Kind ``chat`` echoes the last user message of ``input.messages``; kind ``embed`` returns, for
each text of ``input.input``, a deterministic unit vector of EMBED_DIM floats derived from its
SHA-256, so embedding paths can be checked end to end.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

from jetgrid.events import JobSubmitted
from jetgrid.worker.backends.base import Result, RunContext
from jetgrid.worker.errors import PermanentError, TransientError

EMBED_DIM = 16


def job_text(job: JobSubmitted) -> str:
    if job.prompt is not None:
        return job.prompt
    inp = job.input or {}
    messages = inp.get("messages")
    if isinstance(messages, list) and messages:
        last = messages[-1]
        if job.kind == "chat":  # the last user message
            users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
            last = users[-1] if users else last
        if isinstance(last, dict):
            return str(last.get("content", ""))
    return json.dumps(inp, sort_keys=True, separators=(",", ":"))


def embedding(text: str) -> list[float]:
    """A deterministic unit vector for `text`."""
    digest = hashlib.sha256(text.encode()).digest()
    raw = [(b - 127.5) / 127.5 for b in digest[:EMBED_DIM]]
    norm = sum(x * x for x in raw) ** 0.5 or 1.0
    return [round(x / norm, 6) for x in raw]


def embed_texts(job: JobSubmitted) -> list[str]:
    value = (job.input or {}).get("input", job.prompt or "")
    return [value] if isinstance(value, str) else [str(v) for v in value]


def expected_output(job: JobSubmitted) -> dict[str, Any]:
    """What the echo backend returns for `job` (used by tests and benchmarks to check results)."""
    if job.kind == "embed":
        return {"embeddings": [embedding(t) for t in embed_texts(job)]}
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
        fail = inp.get("fail") or job.options.get("fail")  # options: for chat-shaped requests
        if fail == "transient":
            raise TransientError("echo: asked to fail transiently")
        if fail == "permanent":
            raise PermanentError("echo: asked to fail permanently", error_type="bad_input")
        delay = inp.get("sleep", self.latency_s)
        if isinstance(delay, int | float) and delay > 0:
            await asyncio.sleep(float(delay))
        out = expected_output(job)
        if job.kind == "embed":
            n = sum(len(t.split()) for t in embed_texts(job))
            return Result(output=out, usage={"prompt_tokens": n, "total_tokens": n})
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
