"""Files list and delete driven by the official `openai` client, unchanged: `files.list()` gives
the caller's own files (a `purpose` filter, paging), `files.delete()` removes one of the
caller's files and no other key's, and a batch's deleted result file stays deleted."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import openai
import pytest

from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.settings import Settings
from jetgrid.gateway.auth import hash_key
from tests.gateway.test_batches import KEY_A, KEY_B, batch_gateway, chat_line, client, finished
from tests.gateway.test_batches import jsonl as lines_of

pytestmark = pytest.mark.integration


async def test_files_list_shows_only_the_callers_files_filtered_and_paged(
    streams: Settings, serve_gateway: Callable[[Settings], Any], bus: Bus
) -> None:
    settings = streams.replace(api_keys=f"{hash_key(KEY_A)},{hash_key(KEY_B)}")
    data = lines_of(chat_line("x", "y"))
    async with (
        batch_gateway(settings, serve_gateway, bus) as base,
        client(base, KEY_A) as a,
        client(base, KEY_B) as b,
    ):
        assert [f async for f in a.files.list()] == []  # an empty bucket
        mine = [await a.files.create(file=(f"a{i}.jsonl", data), purpose="batch") for i in range(3)]
        theirs = await b.files.create(file=("b.jsonl", data), purpose="batch")
        listed = [f async for f in a.files.list()]
        assert {f.id for f in listed} == {f.id for f in mine}
        assert [f.filename for f in listed if f.id == mine[0].id] == ["a0.jsonl"]
        assert [f.id async for f in b.files.list()] == [theirs.id]
        assert [f async for f in a.files.list(purpose="batch_output")] == []
        assert len([f async for f in a.files.list(purpose="batch")]) == 3
        # Paging: the client follows `after` while `has_more`, one file a page.
        first = await a.files.list(limit=1, order="asc")
        assert len(first.data) == 1 and first.has_more
        paged = [f.id async for f in await a.files.list(limit=1, order="asc")]
        assert sorted(paged) == sorted(f.id for f in mine) and len(paged) == 3
        with pytest.raises(openai.BadRequestError):
            await a.files.list(limit=0)
        with pytest.raises(openai.BadRequestError):
            await a.files.list(after=theirs.id)  # not a file of the caller's


async def test_files_delete_is_bound_to_the_owner_and_a_deleted_file_is_gone(
    streams: Settings, serve_gateway: Callable[[Settings], Any], bus: Bus
) -> None:
    settings = streams.replace(api_keys=f"{hash_key(KEY_A)},{hash_key(KEY_B)}")
    data = lines_of(chat_line("x", "y"))
    async with (
        batch_gateway(settings, serve_gateway, bus) as base,
        client(base, KEY_A) as a,
        client(base, KEY_B) as b,
    ):
        up = await a.files.create(file=("in.jsonl", data), purpose="batch")
        with pytest.raises(openai.NotFoundError):
            await b.files.delete(up.id)  # another key's file is not found
        assert (await a.files.retrieve(up.id)).id == up.id
        gone = await a.files.delete(up.id)
        assert (gone.id, gone.object, gone.deleted) == (up.id, "file", True)
        for call in (a.files.retrieve(up.id), a.files.content(up.id), a.files.delete(up.id)):
            with pytest.raises(openai.NotFoundError):
                await call
        assert [f async for f in a.files.list()] == []
        with pytest.raises(openai.NotFoundError):
            await a.files.delete("file-nope")


async def test_a_deleted_batch_result_file_is_not_written_again(
    streams: Settings,
    serve_gateway: Callable[[Settings], Any],
    start_worker: Callable[..., Awaitable[Any]],
    bus: Bus,
) -> None:
    await start_worker(concurrency=2)
    async with batch_gateway(streams, serve_gateway, bus) as base, client(base) as c:
        up = await c.files.create(file=("in.jsonl", lines_of(chat_line("a", "b"))), purpose="batch")
        batch = await c.batches.create(
            input_file_id=up.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        done = await finished(c, batch.id)
        assert done.output_file_id
        outputs = [f.id async for f in c.files.list(purpose="batch_output")]
        assert outputs == [done.output_file_id]
        await c.files.delete(done.output_file_id)
        await c.batches.retrieve(batch.id)  # a read of the ended batch writes no file again
        with pytest.raises(openai.NotFoundError):
            await c.files.content(done.output_file_id)
        assert [f async for f in c.files.list(purpose="batch_output")] == []
