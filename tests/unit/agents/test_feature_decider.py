"""The CPU decider (`features` kind) on real data slices, with the real embedding and image models."""

from __future__ import annotations

import numpy as np
import pytest

from kdsl.agents.decider_blocks import Encoders
from kdsl.agents.decider_kinds import card_kind, decider_kinds, load_decider
from kdsl.agents.feature_decider import FeatureDecider, FeatureDeciderConfig, TaskHead
from kdsl.config import Settings
from kdsl.data import Dataset, k_shot
from kdsl.errors import ModelError
from kdsl.tools.cache import FeatureCache
from kdsl.tools.embeddings import TextEmbedder
from kdsl.tools.features import FeatureTable, SampleFeatures, dialogue_fields
from kdsl.tools.visual import VisualLabeler

INTENTS = 8


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> FeatureCache:
    return FeatureCache(tmp_path_factory.mktemp("cache") / "features.sqlite")


@pytest.fixture(scope="module")
def banking(banking77_path) -> tuple[Dataset, list, list, FeatureTable]:
    """Eight real Banking77 intents: 12 training and 10 held-out utterances each."""
    from kdsl.data import load_dataset

    full = load_dataset(banking77_path)
    labels = sorted(full.label_spaces["intent"])[:INTENTS]
    ds = Dataset(name="b77-slice", samples=tuple(s for s in full.samples if s.label in labels),
                 label_spaces={"intent": tuple(labels)})
    train_ids = set(k_shot(ds, 12, ids=[s.id for s in ds.samples if s.meta["split"] == "train"], seed=0))
    test_ids = k_shot(ds, 10, ids=[s.id for s in ds.samples if s.meta["split"] == "test"], seed=0)
    train = [s for s in ds.samples if s.id in train_ids]
    test = [ds.get(i) for i in test_ids]
    feats = FeatureTable(SampleFeatures(sample_id=s.id, **dialogue_fields(s)) for s in [*train, *test])
    return ds, train, test, feats


@pytest.fixture(scope="module")
def fitted(banking, cache) -> FeatureDecider:
    ds, train, _, feats = banking
    return FeatureDecider(FeatureDeciderConfig(), Encoders(TextEmbedder(cache), None), name="b77").fit(
        train, feats, ds.label_spaces)


def accuracy(decider, samples, feats) -> float:
    return float(np.mean([d.best == s.label for d, s in zip(decider.predict(samples, feats), samples, strict=True)]))


def test_fits_english_intents_and_beats_chance_by_far(fitted, banking):
    _, train, test, feats = banking
    head = fitted.heads_["intent"]
    # English: word n-grams are a candidate block; images are not (no encoder, no images).
    assert "user_word" in head.c and "image" not in head.c
    assert abs(sum(head.blocks.values()) - 1.0) < 1e-9 and set(head.blocks) <= set(head.c)
    assert head.n == len(train) == 12 * INTENTS and len(head.classes) == INTENTS
    assert accuracy(fitted, test, feats) >= 0.6  # chance is 1/8
    probs = fitted.predict_proba(test, feats)
    assert all(p.shape == (INTENTS,) and abs(p.sum() - 1) < 1e-6 for p in probs)


def test_save_and_load_give_the_same_probabilities(fitted, banking, cache, tmp_path):
    _, train, test, feats = banking
    folder = fitted.save(tmp_path / "dec", extra={"note": "test"})
    assert card_kind(folder) == "features"
    again = FeatureDecider.load(folder, Encoders(TextEmbedder(cache), None))
    a, b = fitted.predict_proba(test, feats), again.predict_proba(test, feats)
    assert max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True)) < 1e-6
    card = again.card
    assert card.kind == "features" and card.training["trained_ids"] == [s.id for s in train]
    assert card.training["note"] == "test" and "embed" in card.training["encoders"]
    # Through the registry, as every command loads it.
    settings = Settings(home=tmp_path / "home")
    assert "features" in decider_kinds() and "lora" in decider_kinds()
    assert load_decider(folder, settings).predict(test[:3], feats)[0].labels == card.label_spaces["intent"]


def expected_calibration_error(probs: list[np.ndarray], gold: list[int], bins: int = 10) -> float:
    conf = np.array([p.max() for p in probs])
    right = np.array([int(np.argmax(p) == g) for p, g in zip(probs, gold, strict=True)])
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        mask = (conf > lo) & (conf <= hi)
        if mask.any():
            ece += mask.mean() * abs(conf[mask].mean() - right[mask].mean())
    return float(ece)


def test_calibration_lowers_the_expected_calibration_error_on_held_out_samples(fitted, banking):
    ds, _, test, feats = banking
    labels = ds.label_spaces["intent"]
    gold = [labels.index(s.label) for s in test]
    calibrated = expected_calibration_error(fitted.predict_proba(test, feats), gold)
    raw = FeatureDecider(fitted.config, fitted.encoders)
    raw.__dict__.update({k: v for k, v in fitted.__dict__.items() if k.endswith("_")})
    raw.heads_ = {t: TaskHead.model_validate({**h.model_dump(), "temperature": 1.0,
                                              "block_temperature": dict.fromkeys(h.block_temperature, 1.0)})
                  for t, h in fitted.heads_.items()}
    uncalibrated = expected_calibration_error(raw.predict_proba(test, feats), gold)
    assert calibrated < uncalibrated
    assert calibrated < 0.15


def test_candidates_and_unknown_tasks(fitted, banking):
    ds, _, test, feats = banking
    two = ds.label_spaces["intent"][:2]
    sample = test[0].model_copy(update={"candidates": two})
    dist = fitted.predict([sample], feats)[0]
    assert dist.labels == two and abs(sum(dist.probs) - 1) < 1e-9
    with pytest.raises(ModelError, match="not trained for"):
        fitted.predict([test[0].model_copy(update={"task": "other"})], feats)
    with pytest.raises(ModelError, match="not fitted"):
        FeatureDecider().predict(test[:1], feats)
    with pytest.raises(ValueError, match="unknown block"):
        FeatureDeciderConfig(blocks=("no_such_block",))


def test_image_block_on_real_screenshots(mdsirc, cache):
    """EfficientNet whole-image + tile embeddings alone tell four real screen classes apart above chance."""
    ds = mdsirc.for_task("image_scene")
    labels = ["购物车页面", "投诉举报页面", "商品分类选项", "评论区截图页面"]
    picked = [s for lab in labels for s in [x for x in ds.samples if x.label == lab][:14]]
    train = [s for i, s in enumerate(picked) if i % 14 < 9]
    test = [s for i, s in enumerate(picked) if i % 14 >= 9]
    feats = FeatureTable(SampleFeatures(sample_id=s.id) for s in picked)  # no OCR: the image block alone
    decider = FeatureDecider(FeatureDeciderConfig(blocks=("image", "ocr_char")),
                             Encoders(None, VisualLabeler(cache))).fit(train, feats, {"image_scene": tuple(labels)})
    head = decider.heads_["image_scene"]
    assert set(head.blocks) == {"image"}  # no OCR text to read: the text block is left out
    assert accuracy(decider, test, feats) > 0.5  # chance is 1/4


def test_chinese_dialogue_uses_no_word_ngrams(mdsirc):
    ds = mdsirc.for_task("dialogue_intent")
    labels = [lab for lab, _ in ds.label_counts("dialogue_intent").most_common(4)]
    train = [s for s in ds.samples if s.label in labels][:40]
    feats = FeatureTable(SampleFeatures(sample_id=s.id, **dialogue_fields(s)) for s in train)
    decider = FeatureDecider(FeatureDeciderConfig(folds=3), Encoders(None, None)).fit(
        train, feats, {"dialogue_intent": tuple(labels)})
    assert "user_word" not in decider.heads_["dialogue_intent"].c  # Chinese is written without spaces
    assert "user_char" in decider.heads_["dialogue_intent"].c
