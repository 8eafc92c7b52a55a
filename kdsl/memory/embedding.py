"""Chroma's view of kdsl's local text embedder, so the memory never falls back to Chroma's default (it downloads).

This module imports chromadb; `kdsl.memory` loads it only when a memory is opened.
"""

from __future__ import annotations

from typing import Any

from chromadb.api.types import Documents, EmbeddingFunction, Embeddings, Space
from chromadb.utils.embedding_functions import register_embedding_function

from kdsl.tools.embeddings import TextEmbedder

NAME = "kdsl-text-embedder"


@register_embedding_function
class LocalEmbeddingFunction(EmbeddingFunction[Documents]):
    """Documents are embedded as e5 passages, queries as e5 queries (the asymmetric use e5 was trained for).

    Args:
        embedder: kdsl's `TextEmbedder` (give it a `FeatureCache` so unchanged texts are never embedded twice).
    """

    def __init__(self, embedder: TextEmbedder | None = None):
        self.embedder = embedder if embedder is not None else TextEmbedder()

    def __call__(self, input: Documents) -> Embeddings:  # Chroma checks the parameter is named "input"
        return list(self.embedder.embed(list(input), kind="passage"))

    def embed_query(self, input: Documents) -> Embeddings:
        return list(self.embedder.embed(list(input), kind="query"))

    @staticmethod
    def name() -> str:
        return NAME

    def get_config(self) -> dict[str, Any]:
        return {"model": self.embedder.version}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> LocalEmbeddingFunction:
        return LocalEmbeddingFunction()

    def default_space(self) -> Space:
        return "cosine"

    def supported_spaces(self) -> list[Space]:
        return ["cosine", "ip", "l2"]

    def validate_config_update(self, old_config: dict[str, Any], new_config: dict[str, Any]) -> None:
        if old_config.get("model") != new_config.get("model"):
            raise ValueError("the embedding model of a rule memory cannot change; export the rules and import "
                             "them into a new memory to re-embed them")
