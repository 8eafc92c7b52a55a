"""Visual labels and features with the real EfficientNet-Lite0 weights on real MDSIRC images."""

from __future__ import annotations

import numpy as np
import pytest

from kdsl.errors import FeatureError
from kdsl.tools.cache import FeatureCache
from kdsl.tools.visual import VisualLabeler, VisualResult, imagenet_classes

SHOE = "210786b117281020388898414d0ae1-0.jpg"  # a photo of a sneaker
DIALOG = "8238b586-5f58-4506-bd52-7f173569ae67-2085-0.jpg"  # an app screenshot


@pytest.fixture(scope="module")
def images(mdsirc_path):
    return mdsirc_path / "images"


def test_imagenet_classes_ship_with_the_package():
    names = imagenet_classes()
    assert len(names) == 1000
    assert (names[0], names[1], names[409], names[916], names[999]) == (
        "tench",
        "goldfish",
        "analog clock",
        "web site",
        "toilet tissue",
    )


def test_labels_are_real_deterministic_and_cached(images, tmp_path):
    cache = FeatureCache(tmp_path / "f.sqlite")
    labeler = VisualLabeler(cache, top_k=3)
    shoe = labeler(images / SHOE)
    dialog = labeler(images / DIALOG)
    assert labeler.calls == 2
    assert isinstance(shoe, VisualResult) and len(shoe.labels) == 3
    assert shoe.best == "running shoe" and dialog.best == "web site"
    assert set(shoe.labels + dialog.labels) <= set(imagenet_classes())
    assert list(shoe.scores) == sorted(shoe.scores, reverse=True) and 0 < shoe.scores[0] <= 1

    fresh = VisualLabeler(None, top_k=3)  # no cache: a real second run gives the same answer
    rerun = fresh(images / SHOE)
    assert rerun.labels == shoe.labels and np.allclose(rerun.scores, shoe.scores, atol=1e-4)

    cached = VisualLabeler(cache, top_k=5)  # a larger top_k is still served from the cache
    assert cached(images / SHOE).labels[:3] == shoe.labels
    cached.embed(images / SHOE)
    assert cached.calls == 0 and cached._model is None


def test_embedding_is_the_pooled_feature(images, tmp_path):
    labeler = VisualLabeler(FeatureCache(tmp_path / "f.sqlite"))
    a, b = labeler.embed(images / SHOE), labeler.embed(images / DIALOG)
    assert a.shape == (1280,) and a.dtype == np.float32 and np.isfinite(a).all()
    assert labeler.calls == 2
    assert np.array_equal(labeler.embed(images / SHOE), a) and labeler.calls == 2
    cos = float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    assert cos < 0.9  # a shoe photo and a screenshot are far apart


def test_corrupt_file_names_it(tmp_path):
    bad = tmp_path / "not-a-photo.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 30)
    labeler = VisualLabeler(FeatureCache(tmp_path / "f.sqlite"))
    with pytest.raises(FeatureError, match="not-a-photo.png"):
        labeler(bad)
    assert labeler.calls == 0


def test_rejects_bad_settings():
    with pytest.raises(ValueError, match="top_k"):
        VisualLabeler(top_k=0)
    with pytest.raises(ValueError, match="top_k"):
        VisualLabeler(top_k=50)
