"""Every loader on the real files, and on the broken inputs users will feed it."""

from __future__ import annotations

import json
import re
import shutil
import struct
import zlib

import pytest

from kdsl.data import (
    DIALOGUE_TASK,
    IMAGE_TASK,
    OOS_LABEL,
    load_dataset,
    load_jsonl,
    save_jsonl,
    summarize,
)
from kdsl.errors import DataError

LINE = b'{"id": "a", "task": "t", "turns": [{"role": "user", "text": "hi"}], "label": "x"}\n'


def test_mdsirc_real(mdsirc):
    assert len(mdsirc) == 705
    assert set(mdsirc.tasks) == {DIALOGUE_TASK, IMAGE_TASK}
    counts = {t: sum(mdsirc.label_counts(t).values()) for t in mdsirc.tasks}
    assert counts == {DIALOGUE_TASK: 212, IMAGE_TASK: 493}
    assert len(mdsirc.label_spaces[DIALOGUE_TASK]) == 23
    assert len(mdsirc.label_spaces[IMAGE_TASK]) == 25
    assert len(mdsirc.label_counts(IMAGE_TASK)) == 23  # two image-scene classes never occur
    first = mdsirc.get("213e438b17282904772446704d0b28")
    assert first.label == "商品材质"
    assert first.turns[0].role == "user" and first.turns[0].image == 0 and first.images[0].endswith("-0.jpg")
    assert first.turns[4].text == "内胆使用的是316不锈钢吗"
    assert "商品材质" in first.candidates
    # multi-image dialogues map each <image> turn to its own file, in order
    multi = [s for s in mdsirc.samples if len(s.images) > 1]
    assert len(multi) == 24
    for s in multi:
        assert [t.image for t in s.turns if t.image is not None] == list(range(len(s.images)))
    assert sum(1 for s in mdsirc.samples if not s.images) == 1
    image_sample = next(s for s in mdsirc.samples if s.task == IMAGE_TASK)
    assert image_sample.turns == (image_sample.turns[0],) and image_sample.turns[0].image == 0


def test_banking77_real(banking77_path):
    ds = load_dataset(banking77_path)
    assert len(ds) == 10003 + 3080
    assert len(ds.label_spaces["intent"]) == 77
    s = ds.get("test-0")
    assert s.meta["split"] == "test" and s.turns[0].text and s.label in ds.label_spaces["intent"]


def test_clinc150_real_counts_out_of_scope(clinc150_path):
    ds = load_dataset(clinc150_path)
    summary = summarize(ds)
    assert len(ds) == 15000 + 3000 + 4500 + 100 + 100 + 1000
    assert len(ds.label_spaces["intent"]) == 151 and ds.label_spaces["intent"][-1] == OOS_LABEL
    assert ds.label_counts("intent")[OOS_LABEL] == 1200
    assert summary.meta_counts["oos"] == {"false": 22500, "true": 1200}


def test_jsonl_round_trip_keeps_everything(mdsirc, tmp_path):
    part = mdsirc.subset([s.id for s in mdsirc.samples[:5]] + [s.id for s in mdsirc.samples[-5:]])
    path = save_jsonl(part, tmp_path / "own.jsonl")
    back = load_jsonl(path)
    assert back.samples == part.samples
    assert back.label_spaces == part.label_spaces


def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels in a few bytes: a decompression bomb to whoever decodes it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def _mdsirc_copy(mdsirc_path, tmp_path, n=6):
    """A small writable MDSIRC folder: the first n items and their images."""
    items = json.loads((mdsirc_path / "train.json").read_text(encoding="utf-8"))[:n]
    (tmp_path / "images").mkdir()
    for item in items:
        for name in item["image"]:
            shutil.copy(mdsirc_path / "images" / name, tmp_path / "images" / name)
    return items


def _write(tmp_path, items):
    (tmp_path / "train.json").write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    return tmp_path


def test_broken_json_names_the_file(tmp_path):
    (tmp_path / "train.json").write_text('[{"id": "a", ', encoding="utf-8")
    with pytest.raises(DataError, match="train.json.*not valid JSON"):
        load_dataset(tmp_path)


@pytest.mark.parametrize(
    ("breakage", "code", "message"),
    [
        ("missing_image", "missing_image", "does not exist"),
        ("corrupt_image", "corrupt_image", "cannot be decoded"),
        ("truncated_jpeg", "corrupt_image", "cut short"),
        ("empty_dialogue", "empty_dialogue", "no text and no image"),
        ("unknown_label", "unknown_label", "not among the 23 candidate labels"),
        ("duplicate_id", "duplicate_id", "appears more than once"),
        ("decompression_bomb", "image_too_large", "too large to decode"),
        ("output_not_a_string", "bad_label", "field 'output' must be the label as a string"),
    ],
)
def test_bad_items_raise_or_are_skipped_and_counted(mdsirc_path, tmp_path, breakage, code, message):
    items = _mdsirc_copy(mdsirc_path, tmp_path)
    bad = items[1]
    if breakage == "missing_image":
        (tmp_path / "images" / bad["image"][0]).unlink()
    elif breakage == "corrupt_image":
        (tmp_path / "images" / bad["image"][0]).write_bytes(b"\xff\xd8 not really a jpeg")
    elif breakage == "truncated_jpeg":  # a real image cut in half: its header still reads
        path = tmp_path / "images" / bad["image"][0]
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif breakage == "empty_dialogue":
        start, end = "<用户与客服的对话 START>\n", "<用户与客服的对话 END>"
        head, rest = bad["instruction"].split(start)
        bad["instruction"] = head + start + "用户: \n客服: \n" + end + rest.split(end)[1]
        bad["image"] = []
    elif breakage == "unknown_label":
        bad["output"] = "不存在的标签"
    elif breakage == "duplicate_id":
        bad["id"] = items[0]["id"]
    elif breakage == "decompression_bomb":
        (tmp_path / "images" / bad["image"][0]).write_bytes(_png_header(40_000, 40_000))
    elif breakage == "output_not_a_string":
        bad["output"] = 123
    _write(tmp_path, items)

    with pytest.raises(DataError) as info:
        load_dataset(tmp_path)
    assert info.value.code == code
    assert message in str(info.value) and "train.json" in str(info.value) and bad["id"] in str(info.value)

    ds = load_dataset(tmp_path, skip_invalid=True)
    assert len(ds) == len(items) - 1
    assert [i.code for i in ds.skipped] == [code]
    assert summarize(ds).invalid == {code: 1}


def test_jsonl_broken_line_is_named(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"id": "a", "task": "t", "turns": [{"role": "user", "text": "hi"}], "label": "x"}\n'
                    '{"id": "b", "task": \n'
                    '{"id": "c", "task": "t", "turns": [{"role": "bot", "text": "hi"}], "label": "x"}\n',
                    encoding="utf-8")
    with pytest.raises(DataError, match="line 2 is not valid JSON"):
        load_jsonl(path)
    ds = load_jsonl(path, skip_invalid=True)
    assert [s.id for s in ds.samples] == ["a"]
    assert sorted(i.code for i in ds.skipped) == ["bad_sample", "broken_json"]
    assert any("turns.0.role" in i.reason for i in ds.skipped)


def test_csv_without_label_column(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("text,foo\nhello,bar\n", encoding="utf-8")
    with pytest.raises(DataError, match="which column is the label"):
        load_dataset(path)


def test_unknown_path():
    with pytest.raises(DataError, match="no such file or folder"):
        load_dataset("/nonexistent/data")


@pytest.mark.parametrize(("name", "content", "message"), [
    ("header-list.jsonl", b'{"kdsl_dataset": 1, "label_spaces": ["a"]}\n' + LINE, "label_spaces must map each task"),
    ("header-number.jsonl", b'{"kdsl_dataset": 1, "label_spaces": 5}\n' + LINE, "label_spaces must map each task"),
    ("latin1.jsonl", LINE.replace(b"hi", b"h\xe9"), "line 1 is not UTF-8 text"),
    ("empty.jsonl", b"", "no samples"),
    ("blank.csv", b"text,label\n", "no samples"),
    ("banking77/categories.json", b"null", "expected a JSON list of label names, found null"),
    ("banking77/categories.json", b'{"a": 1}', "expected a JSON list of label names, found {"),
], ids=["header-list", "header-number", "not-utf8", "empty-jsonl", "empty-csv", "categories-null", "categories-dict"])
def test_malformed_files_are_data_errors_naming_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(content)
    if name.startswith("banking77/"):
        for split in ("train", "test"):
            (path.parent / f"{split}.csv").write_text("text,category\nhi,a\n", encoding="utf-8")
        path = path.parent
    with pytest.raises(DataError, match=re.escape(message)) as info:
        load_dataset(path)
    assert str(path) in str(info.value)


def test_a_line_that_is_not_utf8_is_skipped_and_counted(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(LINE + LINE.replace(b'"a"', b'"b"').replace(b"hi", b"h\xe9"))
    ds = load_jsonl(path, skip_invalid=True)
    assert [s.id for s in ds.samples] == ["a"] and [i.code for i in ds.skipped] == ["not_utf8"]
