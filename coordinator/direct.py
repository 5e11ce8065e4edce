"""Batched direct gets (ADR-31): many stored messages in one request, with no consumer.

Used by `coordinator.bus.Bus.messages`, which pages with it and translates its errors.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from nats.aio.client import Client as NATS
from nats.js.api import RawStreamMsg
from nats.js.manager import JetStreamManager

from jetgrid.coordinator.errors import NatsError


async def batch_get(
    nc: NATS, api_prefix: str, stream: str, req: dict[str, Any], timeout_s: float
) -> tuple[list[RawStreamMsg], bool]:
    """The messages one batched direct get `req` answers (``seq``, ``batch``, and any of
    ``next_by_subj``, ``multi_last``, ``up_to_seq``), and whether more match after them.
    NatsError when the server refuses it; nats-py's errors when it does not answer."""
    batch = int(req["batch"])
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    got: list[RawStreamMsg] = []
    more = False
    try:
        await nc.publish(f"{api_prefix}.DIRECT.GET.{stream}", json.dumps(req).encode(), reply=inbox)
        while len(got) < batch:
            msg = await sub.next_msg(timeout=timeout_s)
            headers = msg.headers or {}
            status = headers.get("Status")
            if status == "204" or status == "404":  # end of batch, or nothing at all
                break
            if status or (not msg.data and "Nats-Subject" not in headers):
                raise NatsError(
                    f"NATS refused to read {stream} by batch: {headers.get('Description')}."
                )
            got.append(JetStreamManager._lift_msg_to_raw_msg(msg))
            pending = headers.get("Nats-Num-Pending")
            more = int(pending) > 0 if pending and pending.isdigit() else len(got) >= batch
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    return got, more
