"""One entry point that recognises which real format a path holds."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from kdsl.data.clinc150 import load_clinc150
from kdsl.data.csv_format import load_banking77, load_csv
from kdsl.data.jsonl import load_jsonl
from kdsl.data.mdsirc import load_mdsirc
from kdsl.data.sample import Dataset
from kdsl.errors import DataError

FORMATS = ("mdsirc", "banking77", "clinc150", "jsonl", "csv")


def detect_format(path: str | Path) -> str:
    """Name the format of a file or folder, or raise DataError saying what was expected."""
    path = Path(path)
    if path.is_dir():
        if (path / "train.json").is_file():
            return "mdsirc"
        if (path / "categories.json").is_file() and (path / "train.csv").is_file():
            return "banking77"
        if (path / "data_full.json").is_file():
            return "clinc150"
    elif path.is_file():
        if path.suffix == ".jsonl":
            return "jsonl"
        if path.suffix.lower() in (".csv", ".tsv"):
            return "csv"
        if path.name == "data_full.json":
            return "clinc150"
        if path.suffix == ".json":
            return "mdsirc"
    else:
        raise DataError("no such file or folder", path=str(path))
    raise DataError(
        "cannot tell the data format: expected an MDSIRC folder (train.json + images/), a Banking77 folder "
        "(train.csv, test.csv, categories.json), CLINC150 data_full.json, a .jsonl file or a .csv file",
        path=str(path),
    )


def load_dataset(
    path: str | Path, *, format: str | None = None, skip_invalid: bool = False, check_images: bool = True,
    text_column: str | None = None, label_column: str | None = None,
) -> Dataset:
    """Load any supported dataset. `skip_invalid` skips bad items and records them in `Dataset.skipped`;
    `text_column` / `label_column` name a CSV's columns (default: recognised by their usual names)."""
    fmt = format or detect_format(path)
    if fmt == "mdsirc":
        dataset = load_mdsirc(path, skip_invalid=skip_invalid, check_images=check_images)
    elif fmt == "banking77":
        dataset = load_banking77(path, skip_invalid=skip_invalid)
    elif fmt == "clinc150":
        dataset = load_clinc150(path, skip_invalid=skip_invalid)
    elif fmt == "jsonl":
        dataset = load_jsonl(path, skip_invalid=skip_invalid, check_images=check_images)
    elif fmt == "csv":
        dataset = load_csv(path, skip_invalid=skip_invalid, text_column=text_column, label_column=label_column)
    else:
        raise DataError(f"unknown format {fmt!r}; formats: {', '.join(FORMATS)}", path=str(path))
    if not dataset.samples:
        skipped = Counter(i.code for i in dataset.skipped)
        why = f" ({len(dataset.skipped)} skipped: {', '.join(f'{k} {v}' for k, v in sorted(skipped.items()))})"
        raise DataError("no samples" + (why if skipped else ""), path=str(path), code="empty")
    return dataset
