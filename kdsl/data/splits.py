"""Stratified, seeded splits into search / verify / test, and k-shot sampling, recorded as id lists."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kdsl._internal._atomic import write_text_atomic
from kdsl.data.sample import Dataset
from kdsl.errors import DataError

PartName = Literal["search", "verify", "test"]
PARTS: tuple[PartName, ...] = ("search", "verify", "test")


class SplitConfig(BaseModel):
    """Fractions of each (task, label) stratum that go to each part, and the seed."""

    model_config = ConfigDict(frozen=True)

    search: float = Field(0.6, ge=0, le=1, description="Rules are searched and the decider trained here.")
    verify: float = Field(0.2, ge=0, le=1, description="Rules are accepted or refused here.")
    test: float = Field(0.2, ge=0, le=1, description="Sealed: only the final evaluation reads it.")
    seed: int = 0
    k_shot: int | None = Field(
        None, ge=1, description="Keep at most k samples per (task, label) in `search` (few-shot runs); the rest "
        "of that share is left out of every part."
    )

    @field_validator("test")
    @classmethod
    def _sums_to_one(cls, test: float, info) -> float:
        total = info.data.get("search", 0) + info.data.get("verify", 0) + test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"search + verify + test must be 1, got {total:g}")
        return test


class Split(BaseModel):
    """Which sample ids are in which part; saved with a session so every result traces back to its samples."""

    model_config = ConfigDict(frozen=True)

    dataset: str
    fingerprint: str = Field(description="Dataset.fingerprint() of the data this split was made from.")
    config: SplitConfig
    search: tuple[str, ...]
    verify: tuple[str, ...]
    test: tuple[str, ...]

    def ids(self, part: PartName) -> tuple[str, ...]:
        if part not in PARTS:
            raise KeyError(f"unknown split part {part!r}; parts: {', '.join(PARTS)}")
        return getattr(self, part)

    def check(self, dataset: Dataset) -> None:
        """Raise DataError when this split was made from other data than `dataset`."""
        if dataset.fingerprint() != self.fingerprint:
            raise DataError(
                f"the split was made from data with fingerprint {self.fingerprint}, this data has "
                f"{dataset.fingerprint()}; make a new split with `kdsl data split`",
                path=dataset.source,
            )

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_text_atomic(path, self.model_dump_json(indent=1))

    @classmethod
    def load(cls, path: str | Path) -> Split:
        try:
            return cls.model_validate_json(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValidationError) as e:
            raise DataError(f"not a kdsl split file ({e})", path=str(path)) from e


def _strata(dataset: Dataset, ids: list[str] | None = None) -> dict[tuple[str, str], list[str]]:
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    samples = dataset.samples if ids is None else [dataset.get(i) for i in ids]
    for s in samples:
        groups[(s.task, s.label or "")].append(s.id)
    return dict(sorted(groups.items()))  # sorted: the result must not depend on file order of strata


def _allocate(n: int, fractions: list[float]) -> list[int]:
    """Whole counts per part summing to n (largest remainder), each non-empty part getting >= 1 when n allows."""
    raw = [n * f for f in fractions]
    counts = [int(r) for r in raw]
    for i in sorted(range(len(raw)), key=lambda i: (counts[i] - raw[i], i))[: n - sum(counts)]:
        counts[i] += 1
    wanted = [i for i, f in enumerate(fractions) if f > 0]
    if n >= len(wanted):
        for i in wanted:
            if counts[i] == 0:
                donor = max(range(len(counts)), key=lambda j: counts[j])
                counts[donor] -= 1
                counts[i] += 1
    return counts


def split_dataset(dataset: Dataset, config: SplitConfig | None = None) -> Split:
    """Stratify by (task, label), shuffle each stratum with its own seeded generator, cut it by the fractions."""
    config = config or SplitConfig()
    parts: dict[str, list[str]] = {p: [] for p in PARTS}
    fractions = [config.search, config.verify, config.test]
    for (task, label), ids in _strata(dataset).items():
        # One generator per stratum, seeded by the seed and the stratum's name: a task's split is the same whether
        # it is split alone or with other tasks, so rules found on one task's search split never see the test
        # samples of a joint split.
        key = int.from_bytes(hashlib.sha256(f"{task}\t{label}".encode()).digest()[:8], "little")
        rng = np.random.default_rng([config.seed, key])
        order = [ids[i] for i in rng.permutation(len(ids))]
        start = 0
        for part, count in zip(PARTS, _allocate(len(order), fractions), strict=True):
            taken = order[start : start + count]
            if part == "search" and config.k_shot is not None:
                taken = taken[: config.k_shot]  # `order` is already shuffled: the first k are a seeded draw
            parts[part] += taken
            start += count
    return Split(dataset=dataset.name, fingerprint=dataset.fingerprint(), config=config,
                 search=tuple(parts["search"]), verify=tuple(parts["verify"]), test=tuple(parts["test"]))


def stratified_folds(labels: Sequence[object], folds: int, seed: int = 0) -> np.ndarray:
    """A fold number (0..folds-1) per sample, stratified by label; a label with fewer samples than folds spreads
    over as many folds as it has (rotated, so that rare labels do not all land in fold 0)."""
    y = np.unique(np.asarray([str(v) for v in labels]), return_inverse=True)[1] if len(labels) else np.array([])
    rng = np.random.default_rng(seed)
    out = np.empty(len(y), dtype=np.int64)
    start = 0
    for cls in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == cls))
        out[idx] = (np.arange(len(idx)) + start) % folds
        start += len(idx)
    return out


def k_shot(dataset: Dataset, k: int, *, ids: list[str] | tuple[str, ...] | None = None, seed: int = 0) -> list[str]:
    """Up to k sample ids per (task, label), drawn with the seed from `ids` (default: all samples)."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    rng = np.random.default_rng(seed)
    chosen = []
    for group in _strata(dataset, list(ids) if ids is not None else None).values():
        chosen += [group[i] for i in sorted(rng.permutation(len(group))[:k])]
    return chosen



def with_test_file(train: Dataset, test: Dataset) -> tuple[Dataset, tuple[str, ...]]:
    """One dataset of a training file and a separate test file, and the test samples' ids. The training data's
    label spaces hold: a test task or label it does not have is refused (nothing could have learned it). A test
    id that a training sample already has is renamed `test:<id>`, so the two never mix."""
    samples, test_ids = list(train.samples), []
    taken = {s.id for s in train.samples}
    for s in test.samples:
        if s.task not in train.label_spaces:
            raise DataError(f"task {s.task!r} is not in the training data ({train.source or train.name}); "
                            f"its tasks: {', '.join(train.tasks)}", path=test.source, sample_id=s.id)
        if s.label is not None and s.label not in train.label_spaces[s.task]:
            raise DataError(f"label {s.label!r} is not in the training data's label space of task {s.task!r}",
                            path=test.source, sample_id=s.id)
        if s.id in taken:
            s = s.model_copy(update={"id": f"test:{s.id}"})
        taken.add(s.id)
        samples.append(s)
        test_ids.append(s.id)
    merged = Dataset(name=f"{train.name}+{test.name}", samples=tuple(samples), label_spaces=train.label_spaces,
                     source=train.source)
    return merged, tuple(test_ids)
