"""Fixtures for the model-client tests: a scripted OpenAI-compatible server on a real socket."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

# tests/ is not a package, so pytest puts this directory on sys.path: import the helper by name.
from openai_server import OpenAIServer


@pytest.fixture
def openai_server() -> Iterator[OpenAIServer]:
    """A running :class:`OpenAIServer`; the test fails if part of its script went unused."""
    server = OpenAIServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
    assert server.pending == 0, f"{server.pending} scripted behaviour(s) were never requested"
