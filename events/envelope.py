"""The CloudEvents envelope's attributes, and a one-pass reader of current events.

`read` hands the bytes of an envelope to pydantic-core, which parses and validates them in one
pass against a model of the envelope per event type (tagged by ``type``), with the event's own
model as its ``data``: no intermediate dicts and lists, and no per-attribute checks in Python.
It takes only an envelope of a known type at its current version whose every attribute
codec._event_from would accept, and gives the same event. It takes no upcast (an older
``dataversion`` or a retired type) and words no error: events.codec.decode tries it first and
sends anything it does not take down the checked path, which alone upcasts and says what is
wrong. It checks no bounds either: pydantic-core's one-pass parser takes NaN and Infinity as
numbers and integers of any size, so decode gives it only bytes that bounds.cleared passed:
within the bounds, and holding no such token (tests/events/test_envelope_one_pass.py checks
that both paths agree).
"""

from __future__ import annotations

import functools
from typing import Annotated, Any, Literal, Union

from pydantic import (
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    create_model,
)

from jetgrid.events.catalogue import BY_TYPE, RETIRED_TYPES, current_version

__all__ = ["ENVELOPE_KEYS", "SPECVERSION", "read"]

SPECVERSION = "1.0"
# Attributes no jetgrid reader looks at, taken with any value.
_IGNORED = ("datacontenttype", "subject", "dataschema")
ENVELOPE_KEYS = frozenset(
    {"specversion", "id", "source", "type", "time", "dataversion", "data", *_IGNORED}
)

_Text = Annotated[str, StringConstraints(min_length=1)]


@functools.cache
def _reader() -> TypeAdapter[Any]:
    """The tagged union of every current type's envelope model (built on first use: a few tens
    of milliseconds that a command which decodes nothing does not pay)."""
    envelopes: list[Any] = []
    for name, model in BY_TYPE.items():
        if name in RETIRED_TYPES:
            continue
        version = current_version(model)
        fields: dict[str, Any] = {
            "specversion": (Literal[SPECVERSION], ...),
            "id": (_Text, ...),
            "source": (_Text, ...),
            "type": (Literal[name], ...),
            "time": (str, ...),
            # A JSON integer, not 1.0 or true; absent means 1, as codec._event_from reads it.
            "dataversion": (
                Annotated[int, Strict(), Field(ge=version, le=version)],
                1 if version == 1 else ...,
            ),
            "data": (model, ...),
            **{key: (Any, None) for key in _IGNORED},
        }
        envelopes.append(
            create_model(
                f"Current{model.__name__}Envelope", __config__=ConfigDict(extra="forbid"), **fields
            )
        )
    tagged: Any = Annotated[Union[tuple(envelopes)], Field(discriminator="type")]  # noqa: UP007
    return TypeAdapter(tagged)


def read(data: bytes) -> Any | None:
    """The envelope of `data` (attributes `id`, `source`, `time` as its text and `data`, the
    event) if the one-pass reader takes it (module docstring), else None."""
    try:
        return _reader().validate_json(data)
    except ValidationError:
        return None
