"""The OpenAI wire format, as pure functions: request bodies, SSE decoding, answers, errors.

The I/O around these lives in `worker.backends.openai` (one HTTP client, cancel, inventory).
Everything here takes and returns plain data, so each rule is tested without a server.

How a job becomes a request (``job.options`` merged with ``input["options"]``, the input's
winning, are the sampling fields):

- Ollama option names are renamed where OpenAI's differ (``num_predict`` -> ``max_tokens``;
  a negative ``num_predict``, Ollama's "no limit", is left out); options that only make sense
  to Ollama's runner (``num_ctx``, ``num_gpu``, ``num_thread``, ``keep_alive``, ...) and ``n``
  (a job has one answer) are dropped; every other field (``temperature``, ``top_p``, ``stop``,
  ``seed``, ``presence_penalty``, ``frequency_penalty``, and the extensions llama.cpp and
  vLLM take: ``top_k``, ``min_p``, ``repeat_penalty``, ...) is passed through unchanged.
- ``input["format"]`` (Ollama's ``"json"`` or a JSON schema) becomes ``response_format``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from jetgrid.events import JobSubmitted
from jetgrid.worker.errors import BackendError, PermanentError, TransientError

MAX_LINE = 1 << 20  # one SSE line (one chunk) may not exceed this: a guard against a bad peer
MAX_BODY = 64 << 20  # one JSON answer (embeddings of a long batch) may not exceed this

RENAMED = {"num_predict": "max_tokens"}
# Ollama runner settings with no meaning to an OpenAI-compatible server, and `n` (one answer).
DROPPED = frozenset(
    {
        "num_ctx", "num_batch", "num_gpu", "main_gpu", "num_thread", "num_keep", "use_mmap",
        "use_mlock", "numa", "low_vram", "vocab_only", "f16_kv", "penalize_newline",
        "keep_alive", "stream", "stream_options", "n",
    }
)  # fmt: skip
CHAT_KEYS = ("tools", "tool_choice", "parallel_tool_calls", "response_format")
GENERATE_KEYS = ("suffix", "response_format")
EMBED_KEYS = ("dimensions",)


def api_url(base_url: str) -> str:
    """The API root: `base_url` as given when it has a path (``.../v1``), else with ``/v1``."""
    url = base_url.rstrip("/")
    scheme, sep, rest = url.partition("://")
    if scheme not in ("http", "https") or not sep or not rest:
        raise ValueError(
            f"{base_url!r} is not an http(s) URL; give one like http://127.0.0.1:8080/v1"
        )
    return url if "/" in rest else f"{url}/v1"


def redacted(url: str) -> str:
    """`url` without a ``user:password@`` part, for logs."""
    scheme, sep, rest = url.partition("://")
    host, slash, path = rest.partition("/")
    return f"{scheme}{sep}{host.rpartition('@')[2]}{slash}{path}"


# -- errors -----------------------------------------------------------------------------------
def error_message(body: bytes) -> str:
    """The server's own words from an error body: OpenAI's ``{"error": {"message"}}``, a plain
    ``{"error": "..."}``, FastAPI's ``{"detail"}``, or the text itself (cut to 300 characters)."""
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            for key in ("message", "detail", "msg"):
                if isinstance(err.get(key), str | list):
                    return str(err[key])[:300]
        elif isinstance(err, str):
            return err[:300]
    return text[:300] or "no message"


def classify_status(status: int, message: str) -> BackendError:
    """The jetgrid error for an HTTP error answer (the same classes as the Ollama backend).

    401/403 are transient: the worker's key is wrong, not the job, so the worker stops pulling
    and the job goes to another; 429, 408 and 5xx are transient (overloaded); 404 is an unknown
    model and 501 an endpoint the server lacks (e.g. embeddings on a chat-only server), both
    permanent, as is any other 4xx (the request was bad).
    """
    where = f"openai server {status}: {message}"
    if status in (401, 403):
        return TransientError(f"{where} (check --api-key)", error_type="openai_auth")
    if status == 404:
        return PermanentError(where, error_type="unknown_model")
    if status == 501:
        return PermanentError(where, error_type="not_supported")
    if status in (408, 429) or status >= 500:
        return TransientError(where, error_type="openai_overloaded")
    return PermanentError(where, error_type="bad_request")


def bad_response(what: str) -> TransientError:
    return TransientError(f"openai server: {what}", error_type="openai_stream_error")


# -- requests ---------------------------------------------------------------------------------
def sampling(job: JobSubmitted, inp: dict[str, Any]) -> dict[str, Any]:
    """The request's sampling fields from the job's options (see the module docstring)."""
    extra = inp.get("options")
    if extra is not None and not isinstance(extra, dict):
        raise PermanentError("input 'options' must be an object", error_type="bad_input")
    out: dict[str, Any] = {}
    for key, value in {**job.options, **(extra or {})}.items():
        if key in DROPPED or key in ("model", "messages", "prompt", "input"):
            continue
        if key == "num_predict" and isinstance(value, int | float) and value < 0:
            continue
        out[RENAMED.get(key, key)] = value
    return out


def _response_format(fmt: Any) -> dict[str, Any]:
    if fmt == "json":
        return {"type": "json_object"}
    if isinstance(fmt, dict):
        return {"type": "json_schema", "json_schema": {"name": "output", "schema": fmt}}
    raise PermanentError(
        f"input 'format' must be \"json\" or a JSON schema object, not {fmt!r}",
        error_type="bad_input",
    )


def request(job: JobSubmitted, *, stream: bool) -> tuple[str, dict[str, Any]]:
    """(path under the API root, JSON body) for `job`; PermanentError for input it cannot run."""
    inp = dict(job.input or {})
    body: dict[str, Any] = {"model": job.model}
    keys: tuple[str, ...]
    if job.kind == "chat":
        messages = inp.get("messages")
        if messages is None and job.prompt is not None:
            messages = [{"role": "user", "content": job.prompt}]
        if not isinstance(messages, list) or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages
        ):
            raise PermanentError(
                "a chat job needs 'messages' (a list of objects with a 'role')",
                error_type="bad_input",
            )
        path, keys = "/chat/completions", CHAT_KEYS
        body["messages"] = messages
    elif job.kind == "generate":
        prompt = job.prompt if job.prompt is not None else inp.get("prompt")
        if not isinstance(prompt, str):
            raise PermanentError("a generate job needs a string 'prompt'", error_type="bad_input")
        path, keys = "/completions", GENERATE_KEYS
        body["prompt"] = prompt
    elif job.kind == "embed":
        text = inp.get("input", job.prompt)
        if not (isinstance(text, str) or (isinstance(text, list) and text)):
            raise PermanentError(
                "an embed job needs 'input' (a string or a list of strings) or 'prompt'",
                error_type="bad_input",
            )
        body.update(input=text, encoding_format="float")
        body.update({k: inp[k] for k in EMBED_KEYS if k in inp})
        return "/embeddings", body
    else:
        raise PermanentError(
            f"the openai backend runs generate, chat and embed jobs, not {job.kind!r}",
            error_type="bad_input",
        )
    body.update(sampling(job, inp))
    body.update({k: inp[k] for k in keys if k in inp})
    if "format" in inp and "response_format" not in inp:
        body["response_format"] = _response_format(inp["format"])
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    return path, body


# -- answers ----------------------------------------------------------------------------------
async def sse_data(chunks: AsyncIterator[bytes], max_line: int = MAX_LINE) -> AsyncIterator[str]:
    """The ``data`` of each Server-Sent Event in a byte stream (multi-line data joined with
    newlines; comments, ``event:`` and ``id:`` ignored), up to ``data: [DONE]``."""
    buf = b""
    data: list[str] = []
    async for chunk in chunks:
        buf += chunk
        while (i := buf.find(b"\n")) >= 0:
            line, buf = buf[:i].rstrip(b"\r"), buf[i + 1 :]
            if not line:
                if data:
                    event, data = "\n".join(data), []
                    if event == "[DONE]":
                        return
                    yield event
                continue
            name, _, value = line.partition(b":")
            if name == b"data":
                data.append(value.removeprefix(b" ").decode("utf-8", "replace"))
        if len(buf) > max_line:
            raise bad_response(f"a stream line longer than {max_line} bytes")
    name, _, value = buf.rstrip(b"\r").partition(b":")  # a last line without its newline
    if name == b"data":
        data.append(value.removeprefix(b" ").decode("utf-8", "replace"))
    if data and (event := "\n".join(data)) != "[DONE]":
        yield event


def parse(text: str | bytes) -> dict[str, Any]:
    """A JSON object from the server; an `error` object in it raises as the stream error."""
    try:
        data = json.loads(text)
    except ValueError:
        raise bad_response(f"not JSON: {str(text)[:100]!r}") from None
    if not isinstance(data, dict):
        raise bad_response(f"expected a JSON object, got {type(data).__name__}")
    if data.get("error"):
        raise bad_response(error_message(json.dumps(data).encode()))
    return data


def _tool_call(call: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI tool call in the shape the Ollama backend reports: arguments as an object."""
    fn = dict(call.get("function") or {})
    args = fn.get("arguments")
    if isinstance(args, str):
        try:
            fn["arguments"] = json.loads(args) if args else {}
        except ValueError:
            pass  # not JSON: kept as the server sent it
    out: dict[str, Any] = {"function": fn}
    if call.get("id"):
        out["id"] = call["id"]
    return out


@dataclass
class Answer:
    """An answer put together from stream chunks (`add`) or from one JSON body (`whole`)."""

    kind: str
    model: str
    text: list[str] = field(default_factory=list)
    thinking: list[str] = field(default_factory=list)
    calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    finish: str | None = None
    counts: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, Any] = field(default_factory=dict)
    streamed: bool = False

    def add(self, chunk: dict[str, Any]) -> str:
        """Take one stream chunk; the text it adds (to emit as tokens)."""
        self.streamed = True
        self._meta(chunk)
        choices = chunk.get("choices") or []
        choice = choices[0] if isinstance(choices, list) and choices else {}
        if not isinstance(choice, dict):
            return ""
        self.finish = choice.get("finish_reason") or self.finish
        if self.kind == "generate":
            piece = choice.get("text")
        else:
            delta = choice.get("delta") or {}
            piece = delta.get("content")
            if isinstance(think := delta.get("reasoning_content"), str):
                self.thinking.append(think)
            for call in delta.get("tool_calls") or []:
                self._merge_call(call)
        if isinstance(piece, str) and piece:
            self.text.append(piece)
            return piece
        return ""

    def whole(self, data: dict[str, Any]) -> None:
        """Take a whole (non-streamed) answer."""
        self._meta(data)
        choices = data.get("choices") or []
        choice = choices[0] if isinstance(choices, list) and choices else {}
        self.finish = choice.get("finish_reason")
        if self.kind == "generate":
            self.text.append(str(choice.get("text") or ""))
            return
        message = choice.get("message") or {}
        self.text.append(str(message.get("content") or ""))
        if isinstance(think := message.get("reasoning_content"), str):
            self.thinking.append(think)
        for i, call in enumerate(message.get("tool_calls") or []):
            self.calls[i] = call

    def _meta(self, data: dict[str, Any]) -> None:
        if isinstance(u := data.get("usage"), dict):
            self.counts = u
        if isinstance(t := data.get("timings"), dict):  # llama.cpp's server adds its timings
            self.timings = t

    def _merge_call(self, part: dict[str, Any]) -> None:
        i = part.get("index", len(self.calls))
        call = self.calls.setdefault(i, {"function": {"name": "", "arguments": ""}})
        if part.get("id"):
            call["id"] = part["id"]
        fn = part.get("function") or {}
        call["function"]["name"] += fn.get("name") or ""
        call["function"]["arguments"] += fn.get("arguments") or ""

    def output(self) -> dict[str, Any]:
        """The `completed` output, in the Ollama backend's shapes."""
        text = "".join(self.text)
        if self.kind == "generate":
            return {"model": self.model, "response": text, "done_reason": self.finish}
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if self.thinking:
            message["thinking"] = "".join(self.thinking)
        if self.calls:
            message["tool_calls"] = [_tool_call(self.calls[i]) for i in sorted(self.calls)]
        return {"model": self.model, "message": message, "done_reason": self.finish}

    def usage(self) -> dict[str, Any]:
        """The server's counts; from a stream without them (llama-cpp-python's server ignores
        ``include_usage``), completion tokens are the text chunks (servers stream one token per
        chunk) and ``usage_estimated`` says so."""
        usage = usage_of(self.counts, self.timings)
        if not self.counts and self.streamed and self.text:
            n = len(self.text)
            usage.update(completion_tokens=n, total_tokens=usage["prompt_tokens"] + n)
            usage["usage_estimated"] = True
        return usage


def usage_of(counts: dict[str, Any], timings: dict[str, Any] | None = None) -> dict[str, Any]:
    """prompt/completion/total tokens as the server counted them (0 when it did not say), and
    llama.cpp's timings under the Ollama backend's names (counts, nanosecond durations)."""

    def num(d: dict[str, Any], key: str) -> int:
        v = d.get(key)
        return int(v) if isinstance(v, int | float) and not isinstance(v, bool) else 0

    prompt, completion = num(counts, "prompt_tokens"), num(counts, "completion_tokens")
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": num(counts, "total_tokens") or prompt + completion,
    }
    t = timings or {}
    for name, key in (("prompt_eval_count", "prompt_n"), ("eval_count", "predicted_n")):
        if key in t:
            usage[name] = num(t, key)
    for name, key in (("prompt_eval_duration", "prompt_ms"), ("eval_duration", "predicted_ms")):
        if isinstance(v := t.get(key), int | float):
            usage[name] = int(v * 1e6)
    return usage


def embeddings(data: dict[str, Any], model: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(output, usage) of an /embeddings answer: vectors in input order."""
    items = data.get("data")
    if not isinstance(items, list) or not all(isinstance(d, dict) for d in items):
        raise bad_response("an embeddings answer without a 'data' list")
    ordered = sorted(items, key=lambda d: d.get("index", 0))
    vectors = [d.get("embedding") for d in ordered]
    if not all(isinstance(v, list) and all(isinstance(x, int | float) for x in v) for v in vectors):
        raise PermanentError(  # e.g. one vector per token: the server's model has no pooling
            "openai server: an embedding that is not a list of numbers", error_type="bad_response"
        )
    usage = usage_of(data.get("usage") or {})
    usage.update(completion_tokens=0, total_tokens=usage["prompt_tokens"])
    return {"model": model, "embeddings": vectors}, usage


def model_ids(data: dict[str, Any]) -> list[str]:
    """The model ids of a /models answer."""
    items = data.get("data")
    if not isinstance(items, list):
        raise bad_response("a /models answer without a 'data' list")
    return [d["id"] for d in items if isinstance(d, dict) and isinstance(d.get("id"), str)]
