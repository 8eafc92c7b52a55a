"""EmbeddingGemma as blocks of the features decider: the real pack (pulled from its PyPI chunks, checked by hash),
real Banking77 utterances, fit / save / load through the kind registry."""

from __future__ import annotations

import numpy as np
import pytest

from kdsl.agents.decider_blocks import Encoders
from kdsl.agents.decider_kinds import GEMMA_PACK, load_decider
from kdsl.agents.feature_decider import FeatureDecider, FeatureDeciderConfig
from kdsl.data import Dataset, k_shot, load_dataset
from kdsl.models import pack_path, pull
from kdsl.tools.cache import FeatureCache
from kdsl.tools.embeddings import TextEmbedder
from kdsl.tools.features import FeatureTable, SampleFeatures, dialogue_fields
from kdsl.tools.gemma_embedder import GemmaEmbedder

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gemma_settings(pack_settings, home_with_packs):
    pull(GEMMA_PACK, pack_settings, progress=False)  # about 45 s cold: 25 wheels, 1.1 GB
    return home_with_packs()


def test_embeddings_are_unit_length_meaningful_and_cached(gemma_settings, tmp_path):
    cache = FeatureCache(tmp_path / "features.sqlite")
    embedder = GemmaEmbedder(pack_path(GEMMA_PACK, gemma_settings), cache, threads=1)
    texts = ["I lost my card", "my card was stolen yesterday", "how do I top up my account"]
    v = embedder.embed(texts)
    assert v.shape == (3, 768) and np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    assert v[0] @ v[1] > v[0] @ v[2]
    again = GemmaEmbedder(pack_path(GEMMA_PACK, gemma_settings), cache)
    assert np.array_equal(again.embed(texts), v) and again._model is None  # read back, the model never loaded


def test_the_decider_tries_gemma_blocks_and_loads_them_from_its_card(gemma_settings, banking77_path, tmp_path):
    full = load_dataset(banking77_path)
    labels = sorted(full.label_spaces["intent"])[:6]
    ds = Dataset(name="b77-slice", samples=tuple(s for s in full.samples if s.label in labels),
                 label_spaces={"intent": tuple(labels)})
    train_ids = set(k_shot(ds, 10, ids=[s.id for s in ds.samples if s.meta["split"] == "train"], seed=0))
    train = [s for s in ds.samples if s.id in train_ids]
    test = [ds.get(i) for i in k_shot(ds, 5, ids=[s.id for s in ds.samples if s.meta["split"] == "test"], seed=0)]
    feats = FeatureTable(SampleFeatures(sample_id=s.id, **dialogue_fields(s)) for s in [*train, *test])
    cache = FeatureCache(gemma_settings.cache_dir / "features.sqlite")
    encoders = Encoders(TextEmbedder(cache), None, GemmaEmbedder(pack_path(GEMMA_PACK, gemma_settings), cache))
    decider = FeatureDecider(FeatureDeciderConfig(folds=3), encoders, name="b77-gemma").fit(train, feats,
                                                                                         ds.label_spaces)
    head = decider.heads_["intent"]
    assert {"user_embed", "user_gemma"} <= set(head.c)  # both encoders were candidates; CV weighed them
    assert decider.card.training["encoders"]["gemma"].startswith("embeddinggemma-300m@")
    folder = decider.save(tmp_path / "decider")
    # Loaded as any decider is (KDSL_GEMMA unset): the card says it was fitted with Gemma, so Gemma is loaded.
    loaded = load_decider(folder, gemma_settings)
    assert loaded.encoders.gemma is not None
    before = [d.probs for d in decider.predict(test, feats)]
    after = [d.probs for d in loaded.predict(test, feats)]
    assert np.allclose(before, after, atol=1e-5)
