"""`record`: the class decorator of the immutable values a fold builds on every event.

A record is a slotted dataclass that the type checker treats as frozen (assigning to a field is
a mypy error, and mypy checks every module of jetgrid strictly) and that hashes and compares by
value like a frozen dataclass. It does not guard its fields at run time: a frozen dataclass's
``__init__`` sets each field through ``object.__setattr__``, about ten times slower than plain
slot stores (a 32-field record: 4.4 us against 0.4 us), and a fold builds a worker view, its
last ping and an envelope for every ping it applies. Code that needs a changed record builds a
new one (``dataclasses.replace`` or the class's own copy helpers), as with a frozen dataclass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar, dataclass_transform

__all__ = ["record"]

T = TypeVar("T")


@dataclass_transform(frozen_default=True)
def record(cls: type[T]) -> type[T]:
    """``@dataclass(frozen=True, slots=True)`` for the type checker; at run time the same class
    without the per-field ``object.__setattr__`` (module docstring)."""
    return dataclass(slots=True, unsafe_hash=True)(cls)
