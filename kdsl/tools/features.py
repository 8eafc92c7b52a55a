"""What a rule or a text-only model sees of a sample: named text fields.

The dialogue fields come straight from the turns; `image_text` (OCR), `image_title` / `image_bottom` (the OCR lines
of a screenshot's title band and bottom bar, see `kdsl.tools.layout`) and `image_labels` (visual classes) come from
the feature tools and are filled in by `kdsl.tools.builder`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, ValidationError

from kdsl.data.sample import Sample
from kdsl.errors import DataError

FieldName = Literal[
    "user_text", "last_user_text", "agent_text", "image_text", "image_title", "image_bottom", "image_labels", "all_text"
]
FIELDS: tuple[str, ...] = get_args(FieldName)

# Joins turns and OCR lines inside one field; a rule term never spans it because terms cannot contain newlines.
SEPARATOR = "\n"


class SampleFeatures(BaseModel):
    """The text fields of one sample. `image_labels` holds class names, best first."""

    model_config = ConfigDict(frozen=True)

    sample_id: str
    user_text: str = ""
    last_user_text: str = ""
    agent_text: str = ""
    image_text: str = ""
    image_title: str = ""
    image_bottom: str = ""
    image_labels: tuple[str, ...] = ()

    @property
    def all_text(self) -> str:
        parts = [self.user_text, self.agent_text, self.image_text, SEPARATOR.join(self.image_labels)]
        return SEPARATOR.join(p for p in parts if p)

    def field(self, name: str) -> str:
        """The text of one field, as rules match it."""
        if name == "image_labels":
            return SEPARATOR.join(self.image_labels)
        if name not in FIELDS:
            raise KeyError(f"unknown feature field {name!r}; fields: {', '.join(FIELDS)}")
        return getattr(self, name)


def dialogue_fields(sample: Sample) -> dict[str, str]:
    """The fields that need no model: user, last user and agent text. Image placeholders are skipped."""
    user = [t.text for t in sample.turns if t.role == "user" and t.text.strip()]
    agent = [t.text for t in sample.turns if t.role == "agent" and t.text.strip()]
    return {
        "user_text": SEPARATOR.join(user),
        "last_user_text": user[-1] if user else "",
        "agent_text": SEPARATOR.join(agent),
    }


class FeatureTable(Mapping[str, SampleFeatures]):
    """Features by sample id, saved as one JSON object per line."""

    def __init__(self, rows: Iterable[SampleFeatures] = ()):
        self._rows: dict[str, SampleFeatures] = {r.sample_id: r for r in rows}

    def __getitem__(self, sample_id: str) -> SampleFeatures:
        try:
            return self._rows[sample_id]
        except KeyError:
            raise KeyError(f"no features for sample {sample_id!r}; run `kdsl features build` first") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def rows(self, ids: Iterable[str]) -> list[SampleFeatures]:
        return [self[i] for i in ids]

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        with tmp.open("w", encoding="utf-8") as f:
            for row in self._rows.values():
                f.write(row.model_dump_json() + "\n")
        tmp.replace(path)  # atomic: a crash never leaves a half-written table
        return path

    @classmethod
    def load(cls, path: str | Path) -> FeatureTable:
        path = Path(path)
        rows = []
        with path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rows.append(SampleFeatures.model_validate(json.loads(line)))
                except (json.JSONDecodeError, ValidationError) as e:
                    raise DataError(f"line {n} is not a feature row: {e}", path=str(path)) from e
        return cls(rows)
