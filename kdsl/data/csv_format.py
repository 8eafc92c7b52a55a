"""Single-utterance intent data in CSV (`text,label` or Banking77's `text,category`), and the Banking77 folder."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from kdsl.data.sample import Dataset, Sample, Turn
from kdsl.data.validation import Collector, validate_samples
from kdsl.errors import DataError

_LABEL_COLUMNS = ("label", "category", "intent")


def _read_rows(file: Path, collector: Collector, *, task: str, split: str) -> list[Sample]:
    try:
        with file.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            label_col = next((c for c in _LABEL_COLUMNS if c in columns), None)
            if "text" not in columns or label_col is None:
                raise DataError(
                    f"CSV needs a 'text' column and one of {', '.join(_LABEL_COLUMNS)}; found {columns}",
                    path=str(file), code="bad_columns",
                )
            rows = list(reader)
    except UnicodeDecodeError as e:
        raise DataError(f"not UTF-8 text ({e})", path=str(file), code="broken_file") from e
    samples = []
    for n, row in enumerate(rows):
        sample_id = (row.get("id") or f"{split}-{n}").strip()
        text, label = (row.get("text") or "").strip(), (row.get(label_col) or "").strip()
        if not label:
            collector.reject("missing_label", f"row {n + 2} has an empty {label_col!r}", sample_id)
            continue
        samples.append(
            Sample(id=sample_id, task=row.get("task") or task, turns=(Turn(role="user", text=text),),
                   label=label, meta={"split": split})
        )
    return samples


def load_csv(path: str | Path, *, task: str = "intent", skip_invalid: bool = False) -> Dataset:
    """One CSV file of `text,label` rows (optional `id`, `task` columns). The label space is the labels seen."""
    path = Path(path)
    if not path.is_file():
        raise DataError("CSV file does not exist", path=str(path))
    collector = Collector(path, skip_invalid=skip_invalid)
    samples = _read_rows(path, collector, task=task, split=path.stem)
    spaces: dict[str, tuple[str, ...]] = {}
    for s in samples:
        spaces[s.task] = tuple(dict.fromkeys(spaces.get(s.task, ()) + (s.label,)))
    kept = validate_samples(samples, spaces, collector, check_images=False)
    return Dataset(name=path.stem, samples=tuple(kept), label_spaces=spaces, source=str(path),
                   skipped=tuple(collector.items))


def load_banking77(path: str | Path, *, skip_invalid: bool = False) -> Dataset:
    """The Banking77 folder: train.csv and test.csv (`text,category`) and categories.json (77 labels)."""
    path = Path(path)
    categories_file = path / "categories.json"
    try:
        labels = tuple(json.loads(categories_file.read_text(encoding="utf-8")))
    except FileNotFoundError as e:
        raise DataError("Banking77 folder lacks categories.json", path=str(path)) from e
    except json.JSONDecodeError as e:
        raise DataError(f"not valid JSON ({e})", path=str(categories_file), code="broken_json") from e
    samples: list[Sample] = []
    skipped = []
    for split in ("train", "test"):
        file = path / f"{split}.csv"
        if not file.is_file():
            raise DataError(f"Banking77 folder lacks {split}.csv", path=str(path))
        collector = Collector(file, skip_invalid=skip_invalid)
        rows = _read_rows(file, collector, task="intent", split=split)
        samples += validate_samples(rows, {"intent": labels}, collector, check_images=False)
        skipped += collector.items
    return Dataset(name="banking77", samples=tuple(samples), label_spaces={"intent": labels}, source=str(path),
                   skipped=tuple(skipped))
