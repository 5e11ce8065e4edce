"""The gateway's HTTP transport sends the writes of one event-loop step as one, in order, and
never loses or reorders them around close, write_eof or abort."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from jetgrid.gateway.server import FLUSH_BYTES, JoinedWrites


class Recorder(asyncio.Transport):
    """A transport that records what it is asked to do."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, Any]] = []
        self.closing = False

    def write(self, data: Any) -> None:
        self.calls.append(("write", bytes(data)))

    def close(self) -> None:
        self.closing = True
        self.calls.append(("close", None))

    def write_eof(self) -> None:
        self.calls.append(("write_eof", None))

    def abort(self) -> None:
        self.closing = True
        self.calls.append(("abort", None))

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 0


async def test_the_writes_of_one_step_are_sent_as_one_at_the_next() -> None:
    inner = Recorder()
    t = JoinedWrites(inner)
    t.write(b"HTTP/1.1 200 OK\r\n\r\n")
    t.writelines([b"{", memoryview(b'"a":1}')])
    assert inner.calls == [] and t.get_write_buffer_size() == 26
    await asyncio.sleep(0)
    assert inner.calls == [("write", b'HTTP/1.1 200 OK\r\n\r\n{"a":1}')]
    t.write(b"next")
    await asyncio.sleep(0)
    assert inner.calls[-1] == ("write", b"next")


async def test_a_large_body_goes_out_at_once_so_flow_control_sees_it() -> None:
    inner = Recorder()
    t = JoinedWrites(inner)
    t.write(b"head")
    t.write(b"x" * FLUSH_BYTES)
    assert inner.calls == [("write", b"head" + b"x" * FLUSH_BYTES)]
    assert t.get_write_buffer_size() == 0
    await asyncio.sleep(0)  # the step's flush finds nothing left
    assert len(inner.calls) == 1


@pytest.mark.parametrize("end", ["close", "write_eof"])
async def test_close_and_write_eof_send_what_is_pending_first(end: str) -> None:
    inner = Recorder()
    t = JoinedWrites(inner)
    t.write(b"body")
    getattr(t, end)()
    await asyncio.sleep(0)
    assert inner.calls == [("write", b"body"), (end, None)]


async def test_abort_drops_what_is_pending_and_a_closed_socket_gets_nothing() -> None:
    inner = Recorder()
    t = JoinedWrites(inner)
    t.write(b"dropped")
    t.abort()
    await asyncio.sleep(0)
    assert inner.calls == [("abort", None)]
    t.write(b"late")
    await asyncio.sleep(0)
    assert inner.calls == [("abort", None)]


@pytest.mark.integration
async def test_the_gateway_answers_over_keep_alive_and_streams_through_it(
    streams: Any, serve_gateway: Any
) -> None:
    async with serve_gateway(streams) as base, httpx.AsyncClient(base_url=base) as http:
        for _ in range(3):  # one connection, kept alive
            r = await http.get("/healthz")
            assert r.status_code == 200 and r.json() == {"status": "ok"}
        r = await http.post("/v1/jobs?queue_unserved=true", json={"model": "m", "prompt": "x"})
        assert r.status_code == 202, r.text
        r = await http.get("/v1/nope")
        assert r.status_code == 404 and "No route" in r.text
