"""What `kdsl data inspect` reports about a dataset: tasks, label counts, images, refused items."""

from __future__ import annotations

from collections import Counter

from pydantic import BaseModel, ConfigDict

from kdsl.data.sample import Dataset


class TaskSummary(BaseModel):
    model_config = ConfigDict(frozen=True)

    task: str
    samples: int
    labeled: int
    labels_in_space: int
    labels_seen: int
    label_counts: dict[str, int]  # most frequent first
    samples_with_images: int
    turns_mean: float


class DatasetSummary(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    source: str
    fingerprint: str
    samples: int
    images: int  # distinct image files referenced
    tasks: tuple[TaskSummary, ...]
    invalid: dict[str, int]  # refused items by reason code (with --skip-invalid)
    meta_counts: dict[str, dict[str, int]]  # e.g. {"split": {"train": ..}, "oos": {"true": ..}}


def summarize(dataset: Dataset) -> DatasetSummary:
    """Counts for people and scripts; reads no image."""
    tasks = []
    for task, space in dataset.label_spaces.items():
        samples = [s for s in dataset.samples if s.task == task]
        counts = Counter(s.label for s in samples if s.label is not None)
        tasks.append(TaskSummary(
            task=task, samples=len(samples), labeled=sum(counts.values()), labels_in_space=len(space),
            labels_seen=len(counts), label_counts=dict(counts.most_common()),
            samples_with_images=sum(bool(s.images) for s in samples),
            turns_mean=sum(len(s.turns) for s in samples) / len(samples) if samples else 0.0,
        ))
    meta: dict[str, Counter[str]] = {}
    for s in dataset.samples:
        for k, v in s.meta.items():
            meta.setdefault(k, Counter())[v] += 1
    return DatasetSummary(
        name=dataset.name, source=dataset.source, fingerprint=dataset.fingerprint(), samples=len(dataset),
        images=len({p for s in dataset.samples for p in s.images}), tasks=tuple(tasks),
        invalid=dict(Counter(i.code for i in dataset.skipped)),
        meta_counts={k: dict(v.most_common()) for k, v in meta.items()},
    )
