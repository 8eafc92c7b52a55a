"""kdsl's embedder as a Chroma embedding function: local, passages for documents, queries for queries."""

from __future__ import annotations

import numpy as np

from kdsl.memory import LocalEmbeddingFunction


def test_passages_and_queries_use_the_e5_prefixes(embedder):
    ef = LocalEmbeddingFunction(embedder)
    docs = ef(["用户询问商品材质", "the user asks about the material"])
    queries = ef.embed_query(["用户询问商品材质"])
    assert len(docs) == 2 and np.asarray(docs[0]).shape == (384,)
    assert np.allclose(docs[0], embedder.embed(["用户询问商品材质"], kind="passage")[0])
    assert np.allclose(queries[0], embedder.embed(["用户询问商品材质"], kind="query")[0])
    assert not np.allclose(docs[0], queries[0])


def test_chroma_can_rebuild_it_from_its_config(embedder):
    from chromadb.utils.embedding_functions import known_embedding_functions

    ef = LocalEmbeddingFunction(embedder)
    assert known_embedding_functions[ef.name()] is LocalEmbeddingFunction
    assert ef.get_config() == {"model": embedder.version}
    assert not ef.is_legacy() and ef.default_space() == "cosine"
