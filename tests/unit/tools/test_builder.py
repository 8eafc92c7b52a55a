"""Building the feature table of real MDSIRC samples with the real OCR and visual models."""

from __future__ import annotations

import re

import pytest

from kdsl.data.sample import Sample, Turn
from kdsl.errors import FeatureError
from kdsl.tools import (
    FeatureBuilder,
    FeatureCache,
    FeatureTable,
    OcrTool,
    VisualLabeler,
    build_features,
    imagenet_classes,
)

CJK = re.compile(r"[\u4e00-\u9fff]")
REFUND = "0ed8a210-faf0-42c6-9ec9-1f5551089204-1182-0.png"
DETAIL = "8238b586-5f58-4506-bd52-7f173569ae67-2085-0.jpg"
SHOE = "210786b117281020388898414d0ae1-0.jpg"


def _sample(sid: str, *images, text: str = "", agent: str = "", label: str | None = "退款") -> Sample:
    turns = [Turn(role="user", image=i) for i in range(len(images))]
    if text:
        turns.append(Turn(role="user", text=text))
    if agent:
        turns.append(Turn(role="agent", text=agent))
    return Sample(id=sid, task="image", turns=tuple(turns), images=tuple(str(p) for p in images), label=label)


@pytest.fixture(scope="module")
def samples(mdsirc_path):
    img = mdsirc_path / "images"
    return [
        _sample("s1", img / REFUND, text="钱退了吗", agent="亲，已经退款成功了"),
        _sample("s2", img / DETAIL),
        _sample("s3", img / REFUND, text="又是这张图"),  # shares s1's image
        _sample("s4", img / SHOE, img / DETAIL, text="这双鞋是什么码"),  # two images, DETAIL shared with s2
        _sample("s5", img / SHOE, text="有没有别的颜色"),  # shares s4's first image
        _sample("s6", text="只有文字，没有图片", label=None),
    ]


def test_fills_fields_once_per_image_and_rerun_is_all_cache(samples, tmp_path):
    cache = FeatureCache(tmp_path / "f.sqlite")
    ocr, labeler = OcrTool(cache), VisualLabeler(cache, top_k=3)
    builder = FeatureBuilder(ocr=ocr, labeler=labeler, progress=True)
    table = builder.build(samples)

    assert isinstance(table, FeatureTable) and list(table) == [s.id for s in samples]
    assert ocr.calls == labeler.calls == 3  # three distinct files among six samples
    report = builder.report_
    assert (report.samples, report.images, report.computed, report.cached, report.failed) == (6, 3, 3, 0, 0)

    s1 = table["s1"]
    assert s1.user_text == "钱退了吗" and s1.agent_text == "亲，已经退款成功了"
    assert "退款成功" in s1.image_text and CJK.search(s1.image_text)
    assert table["s3"].image_text == s1.image_text and table["s3"].image_labels == s1.image_labels
    assert "running shoe" in table["s4"].image_labels
    assert "web site" in table["s4"].image_labels  # from the second image
    assert table["s4"].image_text.endswith("\n" + table["s2"].image_text)  # images in the sample's order
    assert table["s5"].image_labels[0] == "running shoe"
    assert len(set(table["s4"].image_labels)) == len(table["s4"].image_labels)
    for sid in ("s1", "s2", "s4", "s5"):
        assert table[sid].image_labels and set(table[sid].image_labels) <= set(imagenet_classes())
    assert table["s6"].image_text == "" and table["s6"].image_labels == ()
    assert table["s6"].user_text == "只有文字，没有图片"
    assert "running shoe" in table["s4"].all_text

    ocr2, labeler2 = OcrTool(cache), VisualLabeler(cache, top_k=3)
    rebuilt = build_features(samples, ocr=ocr2, labeler=labeler2, progress=False)
    assert ocr2.calls == labeler2.calls == 0
    assert [rebuilt[i] for i in rebuilt] == [table[i] for i in table]

    saved = table.save(tmp_path / "features.jsonl")
    assert dict(FeatureTable.load(saved)) == dict(table)


def test_bad_image_raises_or_is_skipped_without_losing_work(samples, tmp_path):
    bad = tmp_path / "corrupt-upload.jpg"
    bad.write_bytes(b"\xff\xd8\xff" + b"\x00" * 500)
    good = samples[0]
    broken = _sample("broken-1", bad, text="看看这个")
    cache = FeatureCache(tmp_path / "f.sqlite")

    ocr = OcrTool(cache)
    with pytest.raises(FeatureError, match=r"broken-1.*corrupt-upload\.jpg.*`kdsl features build --skip-errors`"):
        build_features([good, broken], ocr=ocr, labeler=None, progress=False)
    assert ocr.calls == 1  # the good image ran before the bad one ...

    ocr2 = OcrTool(cache)
    builder = FeatureBuilder(ocr=ocr2, labeler=None, progress=False, skip_errors=True)
    table = builder.build([good, broken])
    assert ocr2.calls == 0  # ... and its result stayed in the cache
    assert "退款成功" in table["s1"].image_text
    assert table["broken-1"].image_text == "" and table["broken-1"].user_text == "看看这个"
    (failure,) = builder.report_.failures
    assert (
        failure.sample_ids == ("broken-1",)
        and failure.path == str(bad)
        and "corrupt-upload.jpg" in failure.reason
    )
    assert "1 failed" in builder.report_.summary()


def test_without_tools_only_dialogue_fields(samples):
    table = build_features(samples, ocr=None, labeler=None, progress=False)
    assert (
        table["s1"].user_text == "钱退了吗"
        and table["s1"].image_text == ""
        and table["s1"].image_labels == ()
    )
