"""The Chroma rule memory: rules kept across sessions, deduplicated, versioned, searchable by meaning and by filters,
and asked which accepted rules fire on a sample. chromadb loads only when a memory is opened."""

from __future__ import annotations

from typing import Any

from kdsl.errors import MemoryStoreError
from kdsl.memory.evidence import pool
from kdsl.memory.results import MemoryRecord, SearchHit, WriteAction, WriteResult
from kdsl.memory.store import COLLECTION, DEFAULT_NEAR_DUPLICATE, RuleMemory, document_text

__all__ = [
    "COLLECTION", "DEFAULT_NEAR_DUPLICATE", "LocalEmbeddingFunction", "MemoryRecord", "MemoryStoreError",
    "RuleMemory", "SearchHit", "WriteAction", "WriteResult", "document_text", "pool",
]


def __getattr__(name: str) -> Any:
    if name == "LocalEmbeddingFunction":  # imports chromadb (about a second), so only on demand
        from kdsl.memory.embedding import LocalEmbeddingFunction

        return LocalEmbeddingFunction
    raise AttributeError(f"module 'kdsl.memory' has no attribute {name!r}")
