"""Loader for CLINC150 (`data_full.json`), out-of-scope queries included under the label `oos`."""

from __future__ import annotations

import json
from pathlib import Path

from kdsl.data.sample import Dataset, Sample, Turn
from kdsl.data.validation import Collector, validate_samples
from kdsl.errors import DataError

OOS_LABEL = "oos"
_PARTS = ("train", "val", "test", "oos_train", "oos_val", "oos_test")


def load_clinc150(path: str | Path, *, skip_invalid: bool = False) -> Dataset:
    """Read `data_full.json` (or a folder holding it). Ids are `<part>-<n>`; `meta` holds split and oos flag."""
    path = Path(path)
    file = path / "data_full.json" if path.is_dir() else path
    try:
        parts = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise DataError("no CLINC150 data_full.json here", path=str(path)) from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"not valid JSON ({e})", path=str(file), code="broken_json") from e
    missing = [p for p in _PARTS if p not in parts]
    if missing:
        raise DataError(f"CLINC150 file lacks the parts {missing}", path=str(file), code="bad_layout")

    collector = Collector(file, skip_invalid=skip_invalid)
    samples = []
    for part in _PARTS:
        oos = part.startswith("oos_")
        for n, pair in enumerate(parts[part]):
            sample_id = f"{part}-{n}"
            if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
                collector.reject("bad_item", "expected a [text, label] pair of strings", sample_id)
                continue
            text, label = pair
            samples.append(Sample(
                id=sample_id, task="intent", turns=(Turn(role="user", text=text),), label=label,
                meta={"split": part.removeprefix("oos_"), "oos": str(oos).lower()},
            ))
    labels = sorted({s.label for s in samples if s.label != OOS_LABEL}) + [OOS_LABEL]
    kept = validate_samples(samples, {"intent": tuple(labels)}, collector, check_images=False)
    return Dataset(name="clinc150", samples=tuple(kept), label_spaces={"intent": tuple(labels)}, source=str(file),
                   skipped=tuple(collector.items))
