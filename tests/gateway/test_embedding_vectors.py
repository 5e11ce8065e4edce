"""The embeddings route packs only well-formed vectors from a worker's (untrusted) output."""

from __future__ import annotations

from typing import Any

import pytest

from jetgrid.gateway.openai_more import embedding_vectors


@pytest.mark.parametrize(
    ("output", "n", "expected"),
    [
        ({"embeddings": [[0.5, -1.0], [2, 3]]}, 2, [[0.5, -1.0], [2, 3]]),
        ({"embeddings": [[]]}, 1, [[]]),
        ({"embeddings": [[0.5]]}, 2, None),  # fewer vectors than inputs
        ({"embeddings": [[[0.1, 0.2], [0.3, 0.4]]]}, 1, None),  # one vector per token
        ({"embeddings": [[0.1, "x"]]}, 1, None),
        ({"embeddings": [[0.1, True]]}, 1, None),
        ({"embeddings": [[float("nan")]]}, 1, None),
        ({"embeddings": [[float("inf")]]}, 1, None),
        ({"embeddings": [None]}, 1, None),
        ({"embeddings": "nope"}, 1, None),
        ({}, 1, None),
        ("text", 1, None),
        (None, 1, None),
    ],
)
def test_embedding_vectors(output: Any, n: int, expected: list[list[float]] | None) -> None:
    assert embedding_vectors(output, n) == expected
