"""The token cursor without a server: each chunk of an attempt once and in order, resume by
character offset, and the output's tail (gateway.chunks)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from jetgrid.coordinator.bus import StoredMessage
from jetgrid.coordinator.settings import Settings
from jetgrid.gateway.chunks import Chunk, TokenCursor, TokenRelay, chunk_id, parse_cursor


def c(i: int, text: str, attempt: int = 1, worker: str = "w1") -> Chunk:
    return Chunk(worker, attempt, i, text)


def test_chunks_pass_once_and_in_order() -> None:
    cur = TokenCursor()
    cur.switch("w1", 1)
    assert cur.feed(c(0, "ab")) == "ab"
    assert cur.feed(c(0, "ab")) is None  # a repeat
    assert cur.gap(c(2, "ef")) and cur.feed(c(2, "ef")) is None  # waits for chunk 1
    assert cur.feed(c(1, "cd")) == "cd"
    assert cur.feed(c(2, "ef")) == "ef"
    assert (cur.text, cur.offset, cur.position) == ("abcdef", 6, 6)


def test_a_resume_skips_what_the_client_has_even_inside_a_chunk() -> None:
    cur = TokenCursor.resume((1, 3))
    cur.switch("w1", 1)
    assert [cur.feed(c(i, t)) for i, t in enumerate(["ab", "cd", "ef"])] == ["", "d", "ef"]
    assert cur.position == 6


def test_another_attempt_starts_from_its_first_character() -> None:
    cur = TokenCursor.resume((1, 3))
    cur.switch("w2", 2)
    assert cur.feed(c(0, "xy", attempt=1)) is None  # not the followed attempt
    assert cur.feed(c(0, "xy", attempt=2, worker="w2")) == "xy"
    cur.switch("w3", 3)
    assert (cur.skip, cur.offset, cur.feed(c(0, "z", attempt=3, worker="w3"))) == (0, 0, "z")


@pytest.mark.parametrize(
    ("parts", "skip", "output", "tail"),
    [
        (["ab"], 0, "abcd", "cd"),  # the last chunks were not relayed
        (["ab", "cd"], 0, "abcd", ""),  # nothing left
        ([], 3, "abcdef", "def"),  # resumed at 3, no chunk stored: the output fills in
        (["zz"], 0, "abcd", ""),  # chunks that are not the output's: nothing invented
    ],
)
def test_the_tail_is_what_the_output_adds(
    parts: list[str], skip: int, output: str, tail: str
) -> None:
    cur = TokenCursor.resume((1, skip))
    cur.switch("w1", 1)
    for i, t in enumerate(parts):
        cur.feed(c(i, t))
    assert cur.tail(output) == tail


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        ("12", (12, None)),
        ("12:2:40", (12, (2, 40))),
        (chunk_id(7, 1, 0), (7, (1, 0))),
        ("x", None),
        ("1:2", None),
        ("1:2:3:4", None),
        ("-1", None),
        ("1:a:3", None),
        ("9" * 19, None),
    ],
)
def test_cursor_ids(raw: str, parsed: object) -> None:
    assert parse_cursor(raw) == parsed


class NoChunksBus:
    """A bus whose TOKENS holds nothing."""

    async def messages(self, *args: Any, **kwargs: Any) -> list[Any]:
        return []


async def test_only_a_streamed_attempt_gets_its_output_as_a_last_chunk() -> None:
    def relay(at: tuple[int, int] | None = None) -> TokenRelay:
        return TokenRelay(NoChunksBus(), Settings(), "j", TokenCursor.resume(at))  # type: ignore[arg-type]

    assert await relay().finish("w1", 1, "out", streamed=True) == []  # never streamed
    assert await relay().finish("w1", 1, "out") == ["out"]  # a chat stream wants it all
    assert await relay((1, 1)).finish("w1", 1, "out", streamed=True) == ["ut"]  # resumed
    streamed = relay()
    assert await streamed.live(c(0, "o")) == ["o"]
    assert await streamed.finish("w1", 1, "out", streamed=True) == ["ut"]
    assert await relay().finish("w1", 1, None) == []  # failed: no output to add


class StoredBus:
    """A bus whose TOKENS holds the given chunks of job j (any worker, any attempt)."""

    def __init__(self, *chunks: Chunk) -> None:
        self.chunks = chunks
        self.reads = 0

    async def messages(self, stream: str, *, subject: str, **kwargs: Any) -> list[StoredMessage]:
        self.reads += 1
        worker = subject.rsplit(".", 1)[1]
        body = [
            {"job_id": "j", "attempt": x.attempt, "i": x.i, "text": x.text}
            for x in self.chunks
            if x.worker == worker
        ]
        return [StoredMessage(subject, n + 1, json.dumps(b).encode()) for n, b in enumerate(body)]


async def test_a_gap_in_the_live_chunks_is_read_back_from_tokens() -> None:
    bus = StoredBus(c(0, "a"), c(1, "b"), c(2, "c"), c(0, "X", attempt=2), c(0, "Y", worker="w9"))
    relay = TokenRelay(bus, Settings(), "j", TokenCursor())  # type: ignore[arg-type]
    assert await relay.live(c(0, "a")) == ["a"]
    assert bus.reads == 0  # in order: nothing to read
    assert await relay.live(c(3, "d")) == ["b", "c", "d"]  # chunks 1 and 2 were missed live
    assert await relay.live(c(2, "c")) == []  # a late repeat
    assert relay.cursor.position == 4


async def test_catch_up_skips_what_a_resuming_client_has() -> None:
    bus = StoredBus(c(0, "ab"), c(1, "cd"), c(2, "ef"))
    relay = TokenRelay(bus, Settings(), "j", TokenCursor.resume((1, 3)))  # type: ignore[arg-type]
    assert await relay.catch_up("w1", 1) == ["d", "ef"]
    assert await relay.finish("w1", 1, "abcdefgh", streamed=True) == ["gh"]
