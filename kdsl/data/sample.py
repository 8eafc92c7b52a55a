"""The data model every other part of kdsl reads: turns, samples, datasets."""

from __future__ import annotations

import hashlib
from collections import Counter
from functools import cached_property
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Role = Literal["user", "agent"]


class Turn(BaseModel):
    """One utterance of a dialogue. `image` points into the sample's `images` when the turn sent a picture."""

    model_config = ConfigDict(frozen=True)

    role: Role
    text: str = ""
    image: int | None = Field(default=None, ge=0, description="Index into Sample.images of the image sent here.")


class InvalidItem(BaseModel):
    """One item a loader refused: where it was, which sample, why (`code` is stable, `reason` is for people)."""

    model_config = ConfigDict(frozen=True)

    path: str
    sample_id: str | None = None
    code: str
    reason: str


class Sample(BaseModel):
    """One labeled (or unlabeled) example of one task.

    Image paths are absolute once a loader has read them; the canonical JSONL format stores them relative
    to the file.
    """

    model_config = ConfigDict(frozen=True)

    id: str = Field(min_length=1)
    task: str = Field(min_length=1)
    turns: tuple[Turn, ...] = ()
    images: tuple[str, ...] = ()
    label: str | None = None
    candidates: tuple[str, ...] = Field(default=(), description="Labels the sample may take; empty = the task's.")
    meta: dict[str, str] = Field(default_factory=dict, description="Free provenance, e.g. the source split.")

    @model_validator(mode="after")
    def _check_image_refs(self) -> Sample:
        for turn in self.turns:
            if turn.image is not None and turn.image >= len(self.images):
                raise ValueError(f"turn refers to image {turn.image} but the sample has {len(self.images)} image(s)")
        return self

    @property
    def is_empty(self) -> bool:
        """True when there is nothing to classify: no text in any turn and no image."""
        return not self.images and not any(t.text.strip() for t in self.turns)


class Dataset(BaseModel):
    """Samples plus the label space of each task, in a stable order."""

    model_config = ConfigDict(frozen=True)

    name: str
    samples: tuple[Sample, ...]
    label_spaces: dict[str, tuple[str, ...]]
    source: str = Field(default="", description="Where the data was read from.")
    skipped: tuple[InvalidItem, ...] = Field(
        default=(), description="Items the loader refused under --skip-invalid."
    )

    @model_validator(mode="after")
    def _check_consistency(self) -> Dataset:
        for s in self.samples:
            if s.task not in self.label_spaces:
                raise ValueError(f"sample {s.id!r} has task {s.task!r} with no label space")
        return self

    @property
    def tasks(self) -> list[str]:
        return list(self.label_spaces)

    def __len__(self) -> int:
        return len(self.samples)

    @cached_property
    def _index(self) -> dict[str, Sample]:
        return {s.id: s for s in self.samples}

    def get(self, sample_id: str) -> Sample:
        """The sample with this id; KeyError names it when absent."""
        try:
            return self._index[sample_id]
        except KeyError:
            raise KeyError(f"no sample {sample_id!r} in dataset {self.name!r}") from None

    def for_task(self, task: str) -> Dataset:
        """The samples of one task, with that task's label space only."""
        if task not in self.label_spaces:
            raise KeyError(f"dataset {self.name!r} has no task {task!r}; tasks: {', '.join(self.tasks)}")
        return Dataset(
            name=f"{self.name}:{task}",
            samples=tuple(s for s in self.samples if s.task == task),
            label_spaces={task: self.label_spaces[task]},
            source=self.source,
            skipped=self.skipped,
        )

    def subset(self, ids: list[str] | tuple[str, ...]) -> Dataset:
        """The samples with these ids, in the given order."""
        return Dataset(
            name=self.name,
            samples=tuple(self.get(i) for i in ids),
            label_spaces=self.label_spaces,
            source=self.source,
        )

    def label_counts(self, task: str) -> Counter[str]:
        return Counter(s.label for s in self.samples if s.task == task and s.label is not None)

    def fingerprint(self) -> str:
        """A short content hash of the ids, tasks and labels: names the data behind a split or a result."""
        h = hashlib.sha256()
        for s in self.samples:
            h.update(f"{s.id}\t{s.task}\t{s.label}\n".encode())
        return h.hexdigest()[:16]
