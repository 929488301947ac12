"""Shared fixtures: the real embedded model, a run directory, loopback servers."""

from __future__ import annotations

import pytest

from rewatch.models.local import EmbeddedChatModel


@pytest.fixture(scope="session")
def embedded_llm() -> EmbeddedChatModel:
    """The real SmolLM2-135M in llama.cpp (no cache: every call generates tokens)."""
    return EmbeddedChatModel()
