"""Shared pieces of the memory tests: one real embedder per run, a fresh store per test."""

from __future__ import annotations

import pytest

from kdsl.memory import RuleMemory
from kdsl.tools.cache import FeatureCache
from kdsl.tools.embeddings import TextEmbedder


@pytest.fixture(scope="session")
def embedder(tmp_path_factory) -> TextEmbedder:
    # As RuleMemory's default does: a feature cache, so a statement is embedded once per run, not once per write.
    return TextEmbedder(FeatureCache(tmp_path_factory.mktemp("embeddings") / "features.sqlite"))


@pytest.fixture
def memory(tmp_path, embedder):
    with RuleMemory(tmp_path / "memory", embedder) as mem:
        yield mem

