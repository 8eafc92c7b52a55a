"""A user's own CSV: usual column names recognised, columns named by hand, a byte-order mark, TSV."""

from __future__ import annotations

import pytest

from kdsl.data import load_dataset
from kdsl.errors import DataError


def _write(path, text: str, encoding: str = "utf-8"):
    path.write_text(text, encoding=encoding)
    return path


def test_usual_column_names_are_recognised(tmp_path):
    data = load_dataset(_write(tmp_path / "own.csv", "Sentence,Intent\nwhere is my card,card_arrival\n"
                                                    "cancel the transfer,cancel_transfer\n"))
    assert [(s.turns[0].text, s.label) for s in data.samples] == [("where is my card", "card_arrival"),
                                                                  ("cancel the transfer", "cancel_transfer")]


def test_named_columns_and_a_byte_order_mark(tmp_path):
    path = _write(tmp_path / "excel.csv", "msg,y,other\nhello there,greet,x\n", encoding="utf-8-sig")
    with pytest.raises(DataError, match="--text-column"):
        load_dataset(path)
    data = load_dataset(path, text_column="msg", label_column="y")
    assert data.samples[0].label == "greet" and data.samples[0].turns[0].text == "hello there"
    bom = _write(tmp_path / "bom.csv", "text,label\nhi,greet\n", encoding="utf-8-sig")
    assert load_dataset(bom).samples[0].turns[0].text == "hi"


def test_tsv_and_a_wrong_column_name(tmp_path):
    path = _write(tmp_path / "data.tsv", "utterance\tcategory\nmy card, it is lost\tlost_card\n")
    assert load_dataset(path).samples[0].turns[0].text == "my card, it is lost"
    with pytest.raises(DataError, match="no label column 'nope'"):
        load_dataset(path, label_column="nope")
