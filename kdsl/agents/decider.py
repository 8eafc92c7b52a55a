"""The decider: a (post-trained) language model that gives a calibrated distribution over a task's labels.

It reads each candidate label's log-likelihood as the answer to the decider prompt (one shared prompt pass per
sample, see `ModelBackend.score_labels`) and turns them into probabilities with a per-task temperature fitted on
the verify split. Scores are cached per sample and prompt digest in the decider's folder, so evaluation, the
seesaw report and serving never score the same sample twice.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from kdsl._internal._atomic import write_json_atomic
from kdsl._internal.hashing import digest
from kdsl.agents.decider_prompt import PromptConfig, build_messages
from kdsl.config import resolve_session
from kdsl.data.sample import Dataset, Sample
from kdsl.errors import ConfigError, ModelError
from kdsl.models.base import ModelBackend
from kdsl.tools.features import FeatureTable, SampleFeatures

if TYPE_CHECKING:
    from kdsl.config import Settings

logger = logging.getLogger(__name__)

CARD, CALIBRATION, SCORE_CACHE, ADAPTER = "decider.json", "calibration.json", "scores.jsonl", "adapter"


def deciders_dir(settings: Settings) -> Path:
    return settings.home / "deciders"


def decider_folder(name_or_path: str | Path, settings: Settings) -> Path:
    """A decider's folder from its name (under KDSL_HOME/deciders), a session id (its decider, rules and arbiter)
    or a path; ConfigError lists what exists."""
    path = Path(name_or_path)
    if (path / CARD).is_file():
        return path
    folder = deciders_dir(settings) / str(name_or_path)
    if (folder / CARD).is_file():
        return folder
    # A discovery session's own decider (`last`: the newest session's).
    session = settings.sessions_dir / resolve_session(str(name_or_path), settings) / "decider"
    if (session / CARD).is_file():
        return session
    known = sorted(p.name for p in deciders_dir(settings).glob("*") if (p / CARD).is_file())
    raise ConfigError(f"no decider {str(name_or_path)!r} (looked in {deciders_dir(settings)}); "
                      f"known: {', '.join(known) or 'none yet, train one with `kdsl train`'}")


class DeciderCard(BaseModel):
    """What a decider folder holds: the base model, the adapter, the prompt, the tasks and how it was trained."""

    model_config = ConfigDict(frozen=True)

    name: str
    kind: str = Field("lora", description="The decider kind that wrote the folder (see kdsl.agents.decider_kinds).")
    base_model: str = Field(description="Pack name, transformers folder or Hugging Face id of the base model.")
    backend: str = "hf"
    adapter: str | None = Field(None, description="peft adapter folder, relative to the decider folder.")
    tasks: tuple[str, ...]
    label_spaces: dict[str, tuple[str, ...]]
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    label_suffix: str = Field("", description="Text after the label in training (end of turn); scored with it.")
    training: dict[str, Any] = Field(default_factory=dict, description="Training config, data and loss curve.")

    def save(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        return write_json_atomic(folder / CARD, self.model_dump(mode="json"))

    @classmethod
    def load(cls, folder: Path) -> DeciderCard:
        path = folder / CARD
        if not path.is_file():
            raise ModelError(f"{folder} is not a decider folder (no {CARD}); train one with `kdsl train`")
        return cls.model_validate_json(path.read_text(encoding="utf-8"))


class Calibration(BaseModel):
    """Per-task softmax temperature and what fitting it did to the verify negative log-likelihood."""

    model_config = ConfigDict(frozen=True)

    temperatures: dict[str, float]
    nll_before: dict[str, float] = Field(default_factory=dict)
    nll_after: dict[str, float] = Field(default_factory=dict)
    n: dict[str, int] = Field(default_factory=dict)


class LabelDistribution(BaseModel):
    """The decider's view of one sample: candidate labels and their calibrated probabilities."""

    model_config = ConfigDict(frozen=True)

    sample_id: str
    task: str
    labels: tuple[str, ...]
    probs: tuple[float, ...]

    @property
    def best(self) -> str:
        return self.labels[int(np.argmax(self.probs))]

    @property
    def confidence(self) -> float:
        return float(max(self.probs))

    def top(self, k: int = 3) -> list[tuple[str, float]]:
        order = np.argsort(self.probs)[::-1][:k]
        return [(self.labels[i], float(self.probs[i])) for i in order]

    def prob(self, label: str) -> float:
        return self.probs[self.labels.index(label)] if label in self.labels else 0.0


def softmax(x: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = x / temperature
    z = z - z.max()
    e = np.exp(z)
    return e / e.sum()


def fit_temperature(scores: Sequence[np.ndarray], gold_index: Sequence[int]) -> tuple[float, float, float]:
    """The temperature minimising the negative log-likelihood of the gold labels: (T, nll at T=1, nll at T).

    A one-dimensional search over log T (a grid, then a finer grid around the best point) is exact enough and
    cannot fail the way a gradient step on a handful of samples can.
    """
    if not scores:
        return 1.0, 0.0, 0.0

    def nll(t: float) -> float:
        pairs = zip(scores, gold_index, strict=True)
        return float(np.mean([-math.log(max(softmax(s, t)[g], 1e-12)) for s, g in pairs]))

    grid = np.exp(np.linspace(math.log(0.05), math.log(50.0), 60))
    best = min(grid, key=nll)
    fine = np.exp(np.linspace(math.log(best) - 0.15, math.log(best) + 0.15, 31))
    best = float(min(fine, key=nll))
    return best, nll(1.0), nll(best)


class Decider:
    """A label-scoring model plus its prompt, label spaces and calibration.

    Args:
        backend: any `ModelBackend` (the post-trained model: transformers + peft adapter by default).
        card: the decider's card (prompt config, label spaces, label suffix).
        folder: where calibration and the score cache are kept; None keeps them in memory only.
        cache_limit: most label scores kept in memory (the oldest go first; the folder's cache file keeps all);
            None keeps every one, 0 none.
    """

    def __init__(self, backend: ModelBackend, card: DeciderCard, folder: Path | None = None, *,
                 cache_limit: int | None = None):
        self.backend = backend
        self.card = card
        self.folder = folder
        self.calibration_ = Calibration(temperatures={})
        self._cache: OrderedDict[str, dict[str, float]] = OrderedDict()
        if folder is not None:
            if (folder / CALIBRATION).is_file():
                self.calibration_ = Calibration.model_validate_json((folder / CALIBRATION).read_text("utf-8"))
            self._cache = _read_cache(folder / SCORE_CACHE)
        self.cache_limit = cache_limit

    @classmethod
    def load(cls, folder: Path, settings: Any = None, *, cache_limit: int | None = None,
             **backend_options: Any) -> Decider:
        """Load a trained decider folder (`kdsl train` writes one): the base model with its adapter."""
        from kdsl.models.base import load_backend

        card = DeciderCard.load(folder)
        options = dict(backend_options)
        if card.adapter:
            options["adapter"] = folder / card.adapter
        backend = load_backend(f"{card.backend}:{card.base_model}", settings, **options)
        return cls(backend, card, folder, cache_limit=cache_limit)

    @property
    def cache_limit(self) -> int | None:
        """Most label scores kept in memory; None: no bound. Setting it drops the oldest scores beyond it."""
        return self._cache_limit

    @cache_limit.setter
    def cache_limit(self, value: int | None) -> None:
        if value is not None and value < 0:
            raise ValueError(f"cache_limit must be at least 0 or None, not {value}")
        self._cache_limit = value
        self._bound_cache()

    def _bound_cache(self) -> None:
        # A server sees unbounded new samples; scores cached in memory must not grow with them.
        if self._cache_limit is not None:
            while len(self._cache) > self._cache_limit:
                self._cache.popitem(last=False)

    def candidates(self, sample: Sample) -> tuple[str, ...]:
        if sample.candidates:
            return sample.candidates
        try:
            return self.card.label_spaces[sample.task]
        except KeyError:
            raise ModelError(f"sample {sample.id!r} is of task {sample.task!r}, which this decider was not trained "
                             f"for (tasks: {', '.join(self.card.tasks)})") from None

    def log_likelihoods(
        self, samples: Sequence[Sample], features: FeatureTable | dict[str, SampleFeatures],
        progress: Callable[[int], None] | None = None,
    ) -> list[np.ndarray]:
        """Each sample's candidate-label log-likelihoods (in `candidates(sample)` order); cached on disk."""
        out: list[np.ndarray] = []
        new: list[str] = []
        for sample in samples:
            labels = self.candidates(sample)
            messages = build_messages(sample.task, features[sample.id], self.card.prompt, candidates=labels)
            key = f"{sample.id}:{digest([m.model_dump() for m in messages])}:{digest(list(labels))}"
            cached = self._cache.get(key)
            if cached is None:
                start = time.perf_counter()
                scored = self.backend.score_labels(messages, [lab + self.card.label_suffix for lab in labels])
                cached = {lab: scored.scores[lab + self.card.label_suffix] for lab in labels}
                self._cache[key] = cached
                self._bound_cache()
                new.append(json.dumps({"key": key, "scores": cached}, ensure_ascii=False))
                logger.debug("scored %s in %.2f s", sample.id, time.perf_counter() - start)
            out.append(np.array([cached[lab] for lab in labels], dtype=np.float64))
            if progress is not None:
                progress(1)
            if len(new) >= 16:
                self._flush(new)
        self._flush(new)
        return out

    def _flush(self, lines: list[str]) -> None:
        if self.folder is not None and lines:
            with (self.folder / SCORE_CACHE).open("a", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")
        lines.clear()

    def predict(
        self, samples: Sequence[Sample], features: FeatureTable | dict[str, SampleFeatures],
        progress: Callable[[int], None] | None = None,
    ) -> list[LabelDistribution]:
        """Calibrated label distributions (temperature 1 for a task not calibrated yet)."""
        scores = self.log_likelihoods(samples, features, progress)
        out = []
        for sample, s in zip(samples, scores, strict=True):
            t = self.calibration_.temperatures.get(sample.task, 1.0)
            out.append(LabelDistribution(sample_id=sample.id, task=sample.task, labels=self.candidates(sample),
                                         probs=tuple(float(p) for p in softmax(s, t))))
        return out

    def close(self) -> None:
        """Release the model backend."""
        self.backend.close()

    def calibrate(
        self, dataset: Dataset, features: FeatureTable | dict[str, SampleFeatures],
        progress: Callable[[int], None] | None = None,
    ) -> Decider:
        """Fit one temperature per task on labeled samples (the verify split) into `calibration_`, kept in the
        folder; returns self."""
        labeled = [s for s in dataset.samples if s.label is not None]
        scores = self.log_likelihoods(labeled, features, progress)
        temps, before, after, counts = {}, {}, {}, {}
        for task in sorted({s.task for s in labeled}):
            rows = [(sc, self.candidates(s).index(s.label)) for s, sc in zip(labeled, scores, strict=True)
                    if s.task == task and s.label in self.candidates(s)]
            if not rows:
                continue
            t, b, a = fit_temperature([r[0] for r in rows], [r[1] for r in rows])
            temps[task], before[task], after[task], counts[task] = t, b, a, len(rows)
        self.calibration_ = Calibration(temperatures=temps, nll_before=before, nll_after=after, n=counts)
        if self.folder is not None:
            write_json_atomic(self.folder / CALIBRATION, self.calibration_.model_dump(mode="json"))
        return self


def _read_cache(path: Path) -> OrderedDict[str, dict[str, float]]:
    """The score cache, oldest first; a line cut by a crash is skipped."""
    cache: OrderedDict[str, dict[str, float]] = OrderedDict()
    if not path.is_file():
        return cache
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
            cache[row["key"]] = {str(k): float(v) for k, v in row["scores"].items()}
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
    return cache
