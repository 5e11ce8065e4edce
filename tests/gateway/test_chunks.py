"""The token cursor without a server: each chunk of an attempt once and in order, resume by
character offset, and the output's tail (gateway.chunks)."""

from __future__ import annotations

from typing import Any

import pytest

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
