"""The base every event model derives from."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict


class Event(BaseModel):
    """A fact. Frozen, closed (unknown fields are an error), with a `type` and a `version`.

    Subclasses declare ``type: Literal["jetgrid.<family>.<name>"]`` and ``version: Literal[N]``.
    The codec puts `type` in the CloudEvents envelope and `version` in its ``dataversion``
    extension attribute; the remaining fields are the envelope's ``data``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", str_max_length=1_000_000)

    if TYPE_CHECKING:  # declared by every subclass as a Literal field; for the type checker only
        type: str
        version: int
