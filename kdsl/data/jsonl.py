"""kdsl's canonical format for users' own data: JSON Lines, one header line then one sample per line.

    {"kdsl_dataset": 1, "name": "my-shop", "label_spaces": {"intent": ["refund", "where_is_my_order"]}}
    {"id": "d1", "task": "intent", "label": "refund",
     "turns": [{"role": "user", "text": "I want my money back"}, {"role": "user", "image": 0}],
     "images": ["images/d1-0.jpg"], "candidates": []}

Image paths are relative to the file's folder (absolute paths are kept). The header is optional: without it the
name is the file's stem and each task's label space is the union of its samples' candidates and labels.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import ValidationError

from kdsl.data.sample import Dataset, Sample
from kdsl.data.validation import Collector, validate_samples
from kdsl.errors import DataError

HEADER_KEY = "kdsl_dataset"
FORMAT_VERSION = 1


def _label_spaces(raw: object, path: Path, line: int) -> dict[str, tuple[str, ...]]:
    """The header's label_spaces: each task to its list of labels. A wrong header spoils every sample: DataError."""
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(
            isinstance(labels, list) and all(isinstance(x, str) for x in labels) for labels in raw.values()):
        raise DataError(f"line {line}: the header's label_spaces must map each task to a list of label names "
                        f'(such as {{"intent": ["a", "b"]}}), not {type(raw).__name__}', path=str(path),
                        code="bad_header")
    return {str(t): tuple(labels) for t, labels in raw.items()}


def load_jsonl(path: str | Path, *, skip_invalid: bool = False, check_images: bool = True) -> Dataset:
    """Read a canonical JSONL file. A broken line raises DataError naming the line, or is skipped and counted."""
    path = Path(path)
    if not path.is_file():
        raise DataError("JSONL file does not exist", path=str(path))
    collector = Collector(path, skip_invalid=skip_invalid)
    name, spaces, samples = path.stem, {}, []
    with path.open("rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                collector.reject("not_utf8", f"line {n} is not UTF-8 text (byte {e.start}); save the file as UTF-8")
                continue
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                collector.reject("broken_json", f"line {n} is not valid JSON ({e.msg})")
                continue
            except RecursionError:
                collector.reject("broken_json", f"line {n} is nested too deeply")
                continue
            if isinstance(obj, dict) and HEADER_KEY in obj:
                name = obj.get("name") or name
                spaces = _label_spaces(obj.get("label_spaces"), path, n)
                continue
            sample_id = obj.get("id") if isinstance(obj, dict) else None
            try:
                sample = Sample.model_validate(obj)
            except ValidationError as e:
                first = e.errors()[0]
                where = ".".join(map(str, first["loc"]))
                collector.reject("bad_sample", f"line {n}: {where}: {first['msg']}", sample_id)
                continue
            images = tuple(str((path.parent / p).resolve()) for p in sample.images)
            samples.append(sample.model_copy(update={"images": images}))
    if not spaces:
        for s in samples:
            extra = s.candidates + ((s.label,) if s.label else ())
            spaces[s.task] = tuple(dict.fromkeys(spaces.get(s.task, ()) + extra))
    unknown = {s.task for s in samples} - set(spaces)
    for s in [s for s in samples if s.task in unknown]:
        collector.reject("unknown_task", f"task {s.task!r} is not in the header's label_spaces", s.id)
    samples = [s for s in samples if s.task not in unknown]
    kept = validate_samples(samples, spaces, collector, check_images=check_images)
    return Dataset(name=name, samples=tuple(kept), label_spaces=spaces, source=str(path),
                   skipped=tuple(collector.items))


def save_jsonl(dataset: Dataset, path: str | Path) -> Path:
    """Write a dataset in the canonical format, image paths relative to the file where possible."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.parent.resolve()
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        header = {HEADER_KEY: FORMAT_VERSION, "name": dataset.name,
                  "label_spaces": {t: list(ls) for t, ls in dataset.label_spaces.items()}}
        f.write(json.dumps(header, ensure_ascii=False) + "\n")
        for s in dataset.samples:
            images = tuple(os.path.relpath(p, base) for p in s.images)
            row = s.model_copy(update={"images": images}).model_dump(mode="json", exclude_defaults=True)
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path
