"""Single-utterance intent data in CSV / TSV (`text,label`, Banking77's `text,category`, or any columns named by the
caller or recognised by their usual names), and the Banking77 folder."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from kdsl.data.sample import Dataset, Sample, Turn
from kdsl.data.validation import Collector, validate_samples
from kdsl.errors import DataError

# Usual names of the columns, recognised when the caller names none (compared case-insensitively).
TEXT_COLUMNS = ("text", "sentence", "utterance", "query", "question", "message", "content")
LABEL_COLUMNS = ("label", "category", "intent", "class", "target")


def _pick(columns: list[str], given: str | None, usual: tuple[str, ...], what: str, file: Path) -> str:
    if given is not None:
        if given not in columns:
            raise DataError(f"no {what} column {given!r}; columns: {', '.join(columns)}", path=str(file),
                            code="bad_columns")
        return given
    by_lower = {c.strip().lower(): c for c in columns}
    found = next((by_lower[u] for u in usual if u in by_lower), None)
    if found is None:
        raise DataError(f"which column is the {what}? none of the usual names ({', '.join(usual)}) among "
                        f"{', '.join(columns)}; name it with --{what}-column", path=str(file), code="bad_columns")
    return found


def _read_rows(file: Path, collector: Collector, *, task: str, split: str, text_column: str | None = None,
               label_column: str | None = None) -> list[Sample]:
    try:
        # utf-8-sig: a byte-order mark (Excel writes one) is not part of the first column's name.
        with file.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f, delimiter="\t" if file.suffix.lower() == ".tsv" else ",")
            columns = list(reader.fieldnames or [])
            text_col = _pick(columns, text_column, TEXT_COLUMNS, "text", file)
            label_col = _pick(columns, label_column, LABEL_COLUMNS, "label", file)
            rows = list(reader)
    except UnicodeDecodeError as e:
        raise DataError(f"not UTF-8 text ({e})", path=str(file), code="broken_file") from e
    except csv.Error as e:
        raise DataError(f"not a readable CSV ({e})", path=str(file), code="broken_file") from e
    samples = []
    for n, row in enumerate(rows):
        sample_id = (row.get("id") or f"{split}-{n}").strip()
        text, label = (row.get(text_col) or "").strip(), (row.get(label_col) or "").strip()
        if not label:
            collector.reject("missing_label", f"row {n + 2} has an empty {label_col!r}", sample_id)
            continue
        samples.append(
            Sample(id=sample_id, task=row.get("task") or task, turns=(Turn(role="user", text=text),),
                   label=label, meta={"split": split})
        )
    return samples


def load_csv(path: str | Path, *, task: str = "intent", skip_invalid: bool = False, text_column: str | None = None,
             label_column: str | None = None) -> Dataset:
    """One CSV (or .tsv) file of text and label rows (optional `id`, `task` columns); the columns are named by the
    caller or recognised by their usual names (sentence, utterance, query / intent, category, ...). The label space
    is the labels seen."""
    path = Path(path)
    if not path.is_file():
        raise DataError("CSV file does not exist", path=str(path))
    collector = Collector(path, skip_invalid=skip_invalid)
    samples = _read_rows(path, collector, task=task, split=path.stem, text_column=text_column,
                         label_column=label_column)
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
        raw = json.loads(categories_file.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise DataError("Banking77 folder lacks categories.json", path=str(path)) from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"not valid JSON ({e})", path=str(categories_file), code="broken_json") from e
    if not isinstance(raw, list) or not raw or not all(isinstance(x, str) and x for x in raw):
        raise DataError(f"expected a JSON list of label names, found {json.dumps(raw)[:60]}",
                        path=str(categories_file), code="bad_labels")
    labels = tuple(raw)
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
