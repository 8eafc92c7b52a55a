"""The CPU decider: linear heads over frozen features, weighed and calibrated by cross-validation.

For each task it fits one logistic-regression head per usable feature block (character and word n-grams of the
dialogue and of the OCR text, the title band and the bottom bar, multilingual-e5 embeddings, EfficientNet image
embeddings), each with its regularisation chosen by cross-validated log-loss. The heads' out-of-fold
log-probabilities then choose the blocks' weights (greedy ensemble selection with replacement, Caruana et al. 2004)
and one temperature, so the same default works on Chinese screenshots and on an English CSV, and its probabilities
are calibrated on samples no head was fitted on. Fits in about a minute on two cores with features cached.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from importlib.metadata import version as _dist_version
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from kdsl._internal._atomic import write_json_atomic
from kdsl.agents.block_head import BlockEncoding, fit_linear, log_proba
from kdsl.agents.decider import CARD, Calibration, DeciderCard, LabelDistribution, softmax
from kdsl.agents.decider_blocks import BLOCKS_BY_NAME, DEFAULT_BLOCKS, Block, Encoders, texts_of, usable
from kdsl.data.sample import Sample
from kdsl.data.splits import stratified_folds
from kdsl.errors import ConfigError, ModelError
from kdsl.tools.features import FeatureTable, SampleFeatures

logger = logging.getLogger(__name__)

KIND = "features"
HEADS, VOCAB = "heads.npz", "vocab.json"
Features = FeatureTable | dict[str, SampleFeatures]
Progress = Callable[[int], None]


class FeatureDeciderConfig(BaseModel):
    """How the CPU decider fits. Defaults work on MDSIRC, Banking77 and CLINC150 alike."""

    model_config = ConfigDict(frozen=True)

    blocks: tuple[str, ...] = Field(tuple(b.name for b in DEFAULT_BLOCKS),
                                    description="Candidate feature blocks; those with nothing to read are left out.")
    text_c: tuple[float, ...] = Field((0.1, 1.0), description="Linear-SVM C tried for n-gram blocks.")
    dense_c: tuple[float, ...] = Field((0.01, 0.3), description="Logistic-regression C tried for embedding blocks "
                                                            "(standardised).")
    folds: int = Field(5, ge=2, le=20, description="Cross-validation folds for C, block weights and temperature.")
    ensemble_rounds: int = Field(20, ge=1, le=200, description="Greedy selection steps (weights are counts / rounds).")
    seed: int = 0

    def model_post_init(self, _: Any) -> None:
        unknown = [b for b in self.blocks if b not in BLOCKS_BY_NAME]
        if unknown:
            raise ValueError(f"unknown block {unknown[0]!r}; blocks: {', '.join(BLOCKS_BY_NAME)}")
        if not self.text_c or not self.dense_c or min(self.text_c + self.dense_c) <= 0:
            raise ValueError("text_c and dense_c need at least one positive value each")


class TaskHead(BaseModel):
    """What was learned for one task: classes, the blocks kept with their C and weight, the temperature."""

    model_config = ConfigDict(frozen=True)

    classes: tuple[str, ...]
    blocks: dict[str, float] = Field(description="block -> ensemble weight (kept blocks only).")
    c: dict[str, float] = Field(description="block -> chosen C (every usable block).")
    block_temperature: dict[str, float] = Field(description="block -> temperature calibrating its head alone.")
    cv_log_loss: dict[str, float] = Field(description="block -> out-of-fold log-loss at its C.")
    temperature: float
    oof_log_loss: float = Field(description="The calibrated ensemble's out-of-fold log-loss.")
    oof_accuracy: float
    n: int


def _nll(logp: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(logp[np.arange(len(y)), y]))


def _normalise(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _temperature(z: np.ndarray, y: np.ndarray) -> float:
    """The softmax temperature minimising the log-loss of `z` (n, k): a grid over log T, then a finer one."""

    def loss(t: float) -> float:
        return _nll(_normalise(z / t), y)

    grid = np.exp(np.linspace(np.log(0.05), np.log(50.0), 60))
    best = min(grid, key=loss)
    fine = np.exp(np.linspace(np.log(best) - 0.15, np.log(best) + 0.15, 31))
    return float(min(fine, key=loss))


def _select(oof: dict[str, np.ndarray], y: np.ndarray, rounds: int) -> dict[str, float]:
    """Greedy ensemble selection with replacement on out-of-fold log-loss of the averaged log-probabilities."""
    counts: dict[str, int] = {}
    total = None
    for _ in range(rounds):
        best, best_loss = None, np.inf
        for name, logp in oof.items():
            z = logp if total is None else total + logp
            loss = _nll(_normalise(z / (sum(counts.values()) + 1)), y)
            if loss < best_loss - 1e-9:
                best, best_loss = name, loss
        if best is None:
            break
        counts[best] = counts.get(best, 0) + 1
        total = oof[best] if total is None else total + oof[best]
    n = sum(counts.values())
    return {k: v / n for k, v in sorted(counts.items())}


class FeatureDecider:
    """A learner in scikit-learn's shape over kdsl samples: `fit` returns self, learned attributes end in `_`.

    Args:
        config: blocks and the grids that cross-validation chooses from.
        encoders: the frozen embedding models (cached); `Encoders(None, None)` uses n-gram blocks only.
        name: the name on its card.
    """

    kind = KIND

    def __init__(self, config: FeatureDeciderConfig | None = None, encoders: Encoders | None = None, *,
                 name: str = "features"):
        self.config = config or FeatureDeciderConfig()
        self.encoders = encoders or Encoders(None, None)
        self.name = name
        self.provenance: dict[str, Any] = {}  # where the data came from (data path, split fingerprint), for the card
        self.folder: Path | None = None
        self.cache_limit: int | None = None  # interface parity with the LoRA decider: nothing to bound here

    # --- fitting ------------------------------------------------------------------------------------------

    def _raw(self, block: Block, samples: Sequence[Sample], features: Features):
        if block.is_text:
            return texts_of(block, samples, features)
        return self.encoders.dense(block, samples, features)

    def fit(self, samples: Sequence[Sample], features: Features, label_spaces: dict[str, Sequence[str]],
            progress: Progress | None = None) -> FeatureDecider:
        """Fit one ensemble per task on the labeled samples. `label_spaces` names every task's labels."""
        start = time.perf_counter()
        labeled = [s for s in samples if s.label is not None]
        tasks = [t for t in label_spaces if any(s.task == t for s in labeled)]
        if not tasks:
            raise ConfigError("no labeled samples to fit the decider on")
        self.label_spaces_ = {t: tuple(label_spaces[t]) for t in label_spaces}
        self.heads_: dict[str, TaskHead] = {}
        self.oof_: dict[str, dict[str, np.ndarray]] = {}
        self.folds_: dict[str, dict[str, int]] = {}
        self.encodings_: dict[str, dict[str, BlockEncoding]] = {}
        self.coefs_: dict[str, dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
        for task in tasks:
            rows = [s for s in labeled if s.task == task]
            self._fit_task(task, rows, features)
            if progress is not None:
                progress(len(rows))
        self.trained_ids_ = tuple(s.id for s in labeled)
        self._card = None
        self.fit_seconds_ = time.perf_counter() - start
        self.calibration_ = Calibration(temperatures={t: h.temperature for t, h in self.heads_.items()},
                                       n={t: h.n for t, h in self.heads_.items()})
        return self

    def _fit_task(self, task: str, rows: list[Sample], features: Features) -> None:
        cfg = self.config
        classes = tuple(sorted({s.label for s in rows}))  # type: ignore[type-var]
        y = np.array([classes.index(s.label) for s in rows])
        folds = stratified_folds([s.label for s in rows], min(cfg.folds, len(rows)), cfg.seed)
        blocks = [BLOCKS_BY_NAME[b] for b in cfg.blocks]
        blocks = [b for b in blocks if self.encoders.available(b) and usable(b, rows, features)]
        # Single-utterance data (a CSV of queries) has last_user_text == user_text: one block of each kind per text.
        seen: set[tuple[str, str, tuple[str, ...]]] = set()
        distinct = []
        for b in blocks:
            key = (b.kind, b.encoder, tuple(texts_of(b, rows, features)) if b.field else ())
            if key not in seen:
                seen.add(key)
                distinct.append(b)
        blocks = distinct
        if not blocks:
            raise ConfigError(f"task {task!r}: no feature block has anything to read in its training samples")
        oof: dict[str, np.ndarray] = {}
        chosen_c: dict[str, float] = {}
        block_t: dict[str, float] = {}
        losses: dict[str, float] = {}
        encodings: dict[str, BlockEncoding] = {}
        matrices = {}
        for block in blocks:
            encoding = BlockEncoding(block).fit(self._raw(block, rows, features))
            x = encoding.transform(self._raw(block, rows, features))
            encodings[block.name], matrices[block.name] = encoding, x
            best = None
            for c in (cfg.text_c if block.is_text else cfg.dense_c):
                logp = np.zeros((len(rows), len(classes)))
                for f in np.unique(folds):
                    train, held = folds != f, folds == f
                    coef, intercept, seen = fit_linear(x[train], y[train], c, cfg.seed, sparse_text=block.is_text)
                    logp[held] = log_proba(x[held], coef, intercept, seen, len(classes))
                # Each head is calibrated alone, so C is chosen and the blocks are weighed by what they know,
                # not by how over- or under-confident the classifier's raw scores are.
                t = _temperature(logp, y)
                loss = _nll(_normalise(logp / t), y)
                if best is None or loss < best[0]:
                    best = (loss, c, t, logp)
            losses[block.name], chosen_c[block.name], block_t[block.name], logp = best  # type: ignore[misc]
            oof[block.name] = _normalise(logp / block_t[block.name])
        weights = _select(oof, y, cfg.ensemble_rounds)
        z = sum(w * oof[b] for b, w in weights.items())
        temperature = _temperature(z, y)
        calibrated = _normalise(z / temperature)
        self.oof_[task] = {s.id: np.exp(row) for s, row in zip(rows, calibrated, strict=True)}
        self.folds_[task] = {s.id: int(f) for s, f in zip(rows, folds, strict=True)}
        self.coefs_[task] = {b: fit_linear(matrices[b], y, chosen_c[b], cfg.seed, sparse_text=BLOCKS_BY_NAME[b].is_text)
                             for b in weights}
        self.encodings_[task] = {b: encodings[b] for b in weights}
        self.heads_[task] = TaskHead(
            classes=classes, blocks=weights, c=chosen_c, block_temperature=block_t, cv_log_loss=losses,
            temperature=temperature, oof_log_loss=_nll(calibrated, y),
            oof_accuracy=float(np.mean(calibrated.argmax(axis=1) == y)), n=len(rows))
        logger.info("decider %s / %s: %d samples, blocks %s, temperature %.2f, CV accuracy %.3f", self.name, task,
                    len(rows), ", ".join(f"{b} {w:.2f}" for b, w in weights.items()), temperature,
                    self.heads_[task].oof_accuracy)

    # --- prediction ---------------------------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if not hasattr(self, "heads_"):
            raise ModelError("this decider is not fitted yet: call fit(...) or load a trained folder")

    @property
    def card(self) -> DeciderCard:
        """The decider's card; built once per fit, load or save (the server reads it on every request)."""
        self._check_fitted()
        if getattr(self, "_card", None) is None:
            self._card = DeciderCard(
                name=self.name, base_model="+".join(sorted(self.encoders.versions())) or "n-grams", backend=KIND,
                kind=KIND, tasks=tuple(self.heads_), label_spaces=self.label_spaces_, training=self._record())
        return self._card

    def candidates(self, sample: Sample) -> tuple[str, ...]:
        if sample.candidates:
            return sample.candidates
        try:
            return self.label_spaces_[sample.task]
        except KeyError:
            raise ModelError(f"sample {sample.id!r} is of task {sample.task!r}, which this decider was not trained "
                             f"for (tasks: {', '.join(self.heads_)})") from None

    def _task_log_proba(self, task: str, samples: Sequence[Sample], features: Features) -> np.ndarray:
        head = self.heads_[task]
        z = np.zeros((len(samples), len(head.classes)))
        for b, w in head.blocks.items():
            block = BLOCKS_BY_NAME[b]
            x = self.encodings_[task][b].transform(self._raw(block, samples, features))
            logp = log_proba(x, *self.coefs_[task][b], len(head.classes))
            z += w * _normalise(logp / head.block_temperature[b])
        return z / head.temperature

    def predict_proba(self, samples: Sequence[Sample], features: Features) -> list[np.ndarray]:
        """Each sample's calibrated probabilities over `candidates(sample)` (its own candidates or its task's)."""
        self._check_fitted()
        out: list[np.ndarray | None] = [None] * len(samples)
        for task in dict.fromkeys(s.task for s in samples):
            idx = [i for i, s in enumerate(samples) if s.task == task]
            for i in idx:
                self.candidates(samples[i])  # raises for an unknown task
            z = self._task_log_proba(task, [samples[i] for i in idx], features)
            classes = self.heads_[task].classes
            for row, i in zip(z, idx, strict=True):
                by_label = dict(zip(classes, row, strict=True))
                # A candidate label no training sample had gets the lowest score of the seen ones.
                floor = float(row.min()) - 1.0
                out[i] = softmax(np.array([by_label.get(c, floor) for c in self.candidates(samples[i])]))
        return out  # type: ignore[return-value]

    def predict(self, samples: Sequence[Sample], features: Features,
                progress: Progress | None = None) -> list[LabelDistribution]:
        """Calibrated label distributions, as the arbiter, evaluation and serving read them."""
        probs = self.predict_proba(samples, features)
        if progress is not None:
            progress(len(samples))
        return [LabelDistribution(sample_id=s.id, task=s.task, labels=self.candidates(s),
                                  probs=tuple(float(p) for p in ps)) for s, ps in zip(samples, probs, strict=True)]

    def out_of_fold(self) -> list[LabelDistribution]:
        """The calibrated distributions of the training samples from heads that were not fitted on them.

        Each block's probability for a sample comes from the fold whose heads never saw it; the blocks' weights and
        temperatures are fitted on all of these out-of-fold predictions (a stacking step: labels enter only through
        a few numbers per task). This is what a discovery session rewards rules against, so that the search looks
        for rules where the decider errs on samples it did not learn, not where it memorised them.
        """
        self._check_fitted()
        out = []
        for task, by_id in self.oof_.items():
            classes = self.heads_[task].classes
            space = self.label_spaces_[task]
            for sample_id, probs in by_id.items():
                by_label = dict(zip(classes, probs, strict=True))
                p = np.array([by_label.get(lab, 0.0) for lab in space])
                out.append(LabelDistribution(sample_id=sample_id, task=task, labels=space,
                                             probs=tuple(float(x) for x in p / p.sum())))
        return out

    def calibrate(self, *_: Any, **__: Any) -> FeatureDecider:
        """Already calibrated at fit time, on out-of-fold predictions (`calibration_`); returns self."""
        self._check_fitted()
        return self

    def close(self) -> None:
        """Nothing to release (interface parity with deciders that hold a model server)."""

    # --- persistence --------------------------------------------------------------------------------------

    def _record(self) -> dict[str, Any]:
        return {
            **self.provenance,
            "kind": KIND, "config": self.config.model_dump(mode="json"),
            "heads": {t: h.model_dump(mode="json") for t, h in self.heads_.items()},
            "encoders": self.encoders.versions(), "kdsl_version": _dist_version("kdsl"),
            "sklearn_version": _dist_version("scikit-learn"), "fit_seconds": round(self.fit_seconds_, 2),
            "trained_ids": list(self.trained_ids_),
        }

    @staticmethod
    def _record_keys() -> tuple[str, ...]:
        return ("kind", "config", "heads", "encoders", "kdsl_version", "sklearn_version", "fit_seconds", "trained_ids")

    def save(self, folder: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write the decider folder: card (with the training record), head arrays and vocabularies."""
        self._check_fitted()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {}
        vocab: dict[str, dict[str, list[str]]] = {}
        for task, encs in self.encodings_.items():
            ti = list(self.heads_).index(task)
            for b, enc in encs.items():
                state, terms = enc.state()
                coef, intercept, seen = self.coefs_[task][b]
                for key, arr in {**state, "coef": coef, "intercept": intercept, "seen": seen}.items():
                    arrays[f"t{ti}__{b}__{key}"] = np.asarray(arr)
                if terms:
                    vocab.setdefault(task, {})[b] = terms
        tmp = folder / (HEADS + ".tmp.npz")
        np.savez_compressed(tmp, **arrays)
        tmp.replace(folder / HEADS)
        write_json_atomic(folder / VOCAB, vocab)
        self.provenance.update(extra or {})
        self._card = None
        self.card.save(folder)
        self.folder = folder
        return folder

    @classmethod
    def load(cls, folder: str | Path, encoders: Encoders | None = None) -> FeatureDecider:
        """Load a folder written by `save`; `encoders` must be the models it was fitted with (checked)."""
        folder = Path(folder)
        card = DeciderCard.load(folder)
        record = card.training
        if record.get("kind") != KIND:
            raise ModelError(f"{folder}: not a {KIND} decider (kind {record.get('kind')!r})")
        decider = cls(FeatureDeciderConfig.model_validate(record["config"]), encoders, name=card.name)
        versions = decider.encoders.versions()
        for key, wanted in record.get("encoders", {}).items():
            if versions.get(key) not in (None, wanted):
                logger.warning("decider %s was fitted with %s %s, now %s: predictions may drift", card.name, key,
                               wanted, versions.get(key))
        try:
            with np.load(folder / HEADS, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            vocab = json.loads((folder / VOCAB).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ModelError(f"{folder}: cannot read the decider's heads ({e}); retrain with `kdsl train`") from e
        decider.label_spaces_ = {t: tuple(v) for t, v in card.label_spaces.items()}
        decider.heads_ = {t: TaskHead.model_validate(h) for t, h in record["heads"].items()}
        decider.oof_ = {}  # out-of-fold predictions belong to the fit; a loaded decider has none
        decider.encodings_, decider.coefs_ = {}, {}
        for ti, (task, head) in enumerate(decider.heads_.items()):
            decider.encodings_[task], decider.coefs_[task] = {}, {}
            for b in head.blocks:
                block = BLOCKS_BY_NAME[b]
                get = {k.rsplit("__", 1)[1]: v for k, v in arrays.items() if k.startswith(f"t{ti}__{b}__")}
                decider.encodings_[task][b] = BlockEncoding.from_state(block, get, vocab.get(task, {}).get(b, []))
                decider.coefs_[task][b] = (get["coef"], get["intercept"], get["seen"])
        learned = set(decider._record_keys())
        decider.provenance = {k: v for k, v in record.items() if k not in learned}
        decider.trained_ids_ = tuple(record.get("trained_ids", ()))
        decider.fit_seconds_ = float(record.get("fit_seconds", 0.0))
        decider.calibration_ = Calibration(temperatures={t: h.temperature for t, h in decider.heads_.items()},
                                          n={t: h.n for t, h in decider.heads_.items()})
        decider.folder = folder
        return decider


def merge_deciders(deciders: Sequence[FeatureDecider], name: str) -> FeatureDecider:
    """One decider serving every task of several fitted on disjoint tasks (a task's head is fitted on that task's
    samples alone, so the merged decider predicts exactly as each of its parts does)."""
    if not deciders:
        raise ConfigError("no deciders to merge")
    first = deciders[0]
    merged = FeatureDecider(first.config, first.encoders, name=name)
    merged.label_spaces_, merged.heads_, merged.encodings_, merged.coefs_ = {}, {}, {}, {}
    merged.oof_, merged.folds_ = {}, {}
    for d in deciders:
        d._check_fitted()
        clash = set(d.heads_) & set(merged.heads_)
        if clash:
            raise ConfigError(f"task {sorted(clash)[0]!r} has a head in two of the deciders to merge")
        merged.label_spaces_.update({t: d.label_spaces_[t] for t in d.heads_})
        merged.heads_.update(d.heads_)
        merged.encodings_.update(d.encodings_)
        merged.coefs_.update(d.coefs_)
    merged.trained_ids_ = tuple(i for d in deciders for i in d.trained_ids_)
    merged.fit_seconds_ = sum(d.fit_seconds_ for d in deciders)
    merged.provenance = {**first.provenance, "tasks": list(merged.heads_)}
    merged.calibration_ = Calibration(temperatures={t: h.temperature for t, h in merged.heads_.items()},
                                     n={t: h.n for t, h in merged.heads_.items()})
    return merged


def is_feature_decider(folder: Path) -> bool:
    """Whether a decider folder holds this kind (its card says so)."""
    try:
        return json.loads((folder / CARD).read_text(encoding="utf-8")).get("kind") == KIND
    except (OSError, ValueError):
        return False
