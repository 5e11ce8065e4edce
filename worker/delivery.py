"""What the worker's parts need of a message NATS delivered to them, as protocols.

nats-py's ``Msg`` satisfies both; only the code that receives messages (worker.puller, the
cancel subscription) ever holds one as such, so the parts that act on a delivery (running a job,
storing its outcome) depend on this surface and not on the driver, and tests hand them a plain
object with the same methods.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

__all__ = ["Delivery", "DeliveryInfo", "Message", "StreamPosition"]


class Message(Protocol):
    """A message as it arrived: its subject, body and headers."""

    subject: str
    data: bytes
    headers: dict[str, str] | None


class StreamPosition(Protocol):
    @property
    def stream(self) -> int:
        """The message's sequence in its stream."""
        ...


class DeliveryInfo(Protocol):
    @property
    def sequence(self) -> StreamPosition: ...

    @property
    def num_delivered(self) -> int:
        """How often this message has been delivered, this time included (the attempt)."""
        ...

    @property
    def timestamp(self) -> datetime:
        """When the stream stored the message (the server's clock)."""
        ...


class Delivery(Message, Protocol):
    """A message a pull consumer delivered: where it sits in the stream, and how to settle it."""

    @property
    def metadata(self) -> DeliveryInfo: ...

    async def ack(self) -> None: ...

    async def nak(self, delay: float | None = None) -> None: ...

    async def term(self) -> None: ...

    async def in_progress(self) -> None: ...
