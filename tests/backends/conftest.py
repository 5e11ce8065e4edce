"""Fixtures for backend tests: a protocol-faithful fake Ollama server on a free port."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest


def _load_fake() -> Any:
    name = "jetgrid_tests_fake_ollama"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("fake_ollama.py"))
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


fake_ollama_module = _load_fake()


@pytest.fixture
async def fake_ollama() -> AsyncIterator[Any]:
    """A running FakeOllama with `tiny:1b` (loaded) and `other:1b` (on disk) available."""
    server = fake_ollama_module.FakeOllama()
    server.add("tiny:1b", loaded=True)
    server.add("other:1b")
    await server.start()
    yield server
    await server.stop()


def _load_fake_openai() -> Any:
    name = "jetgrid_tests_fake_openai"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("fake_openai.py"))
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


fake_openai_module = _load_fake_openai()


@pytest.fixture
async def fake_openai() -> AsyncIterator[Any]:
    """A running FakeOpenAI serving the model `tiny`."""
    server = fake_openai_module.FakeOpenAI()
    await server.start()
    yield server
    await server.stop()
