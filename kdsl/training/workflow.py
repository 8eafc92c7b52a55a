"""The decider's workflow around a folder under KDSL_HOME/deciders: prepare data, train, calibrate, evaluate.

A decider folder holds everything needed to evaluate or serve it later without retraining: the card (its kind,
training record, label spaces, where the data came from), the split it was trained on, its calibration, and the
kind's learned state: the peft adapter and a cache of label scores (`lora`), or the heads' arrays (`features`).
Both kinds train on the search split only, so verify stays unseen for the arbiter and the rules' statistics.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from kdsl.agents.collaboration import ArbiterState, Collaboration
from kdsl.agents.decider import Calibration, Decider, DeciderCard
from kdsl.agents.decider_kinds import default_encoders, load_decider
from kdsl.agents.evaluation import EvaluationReport, evaluate, fit_arbiters, search_fallback, with_verify_stats
from kdsl.agents.feature_decider import FeatureDecider, FeatureDeciderConfig
from kdsl.config import Settings
from kdsl.data import Dataset, Split, SplitConfig, load_dataset, split_dataset
from kdsl.errors import ConfigError
from kdsl.rules import RuleSet
from kdsl.tools.features import FeatureTable
from kdsl.training.config import TrainConfig
from kdsl.training.lora import StepHook, TrainResult, train_decider

logger = logging.getLogger(__name__)

SPLIT_FILE = "split.json"
Progress = Callable[[int], None]


class PreparedData(BaseModel):
    """A dataset, its split and its features, for the tasks at hand."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    dataset: Dataset
    split: Split
    features: FeatureTable

    def part(self, name: str) -> Dataset:
        return self.dataset.subset(list(self.split.ids(name)))  # type: ignore[arg-type]


def build_features(dataset: Dataset, settings: Settings, images: bool = True, progress: bool = True) -> FeatureTable:
    from kdsl.tools.pipeline import default_builder

    return default_builder(settings, images=images, progress=progress).build(dataset.samples)


def prepare(
    data: str | Path, settings: Settings, *, tasks: Sequence[str] | None = None, split_path: Path | None = None,
    seed: int = 0, images: bool = True, progress: bool = True,
) -> PreparedData:
    """Load `data` (only `tasks`), split it (or check the given split against it) and build its features."""
    dataset = load_dataset(data)
    if tasks:
        unknown = [t for t in tasks if t not in dataset.label_spaces]
        if unknown:
            raise ConfigError(f"{data}: no task {unknown[0]!r}; tasks: {', '.join(dataset.tasks)}")
        keep = [s.id for s in dataset.samples if s.task in tasks]
        dataset = Dataset(name=dataset.name, samples=tuple(dataset.get(i) for i in keep),
                          label_spaces={t: dataset.label_spaces[t] for t in tasks}, source=dataset.source)
    if split_path is not None:
        full = Split.load(split_path)
        wanted = {s.id for s in dataset.samples}
        split = full.model_copy(update={p: tuple(i for i in full.ids(p) if i in wanted)  # type: ignore[arg-type]
                                        for p in ("search", "verify", "test")})
    else:
        # Per-stratum seeding makes this split of the chosen tasks equal to their part of a split of all tasks.
        split = split_dataset(dataset, SplitConfig(seed=seed))
    return PreparedData(dataset=dataset, split=split, features=build_features(dataset, settings, images, progress))


def train_and_calibrate(
    prepared: PreparedData, folder: Path, config: TrainConfig, settings: Settings, *, name: str | None = None,
    data_path: str | Path | None = None, images: bool = True, on_step: StepHook | None = None,
    progress: Progress | None = None,
) -> tuple[TrainResult, Calibration]:
    """Train on the search split, keep the split in the folder, fit temperatures on verify."""
    result = train_decider(prepared.part("search"), prepared.features, folder, config, settings=settings, name=name,
                           on_step=on_step)
    prepared.split.save(folder / SPLIT_FILE)
    card = DeciderCard.load(folder)
    data_file = str(Path(data_path or prepared.dataset.source).resolve())
    card.model_copy(update={"training": {**card.training, "data_path": data_file,
                                         "images": images, "tasks": list(prepared.dataset.tasks)}}).save(folder)
    decider = Decider.load(folder, settings)
    return result, decider.calibrate(prepared.part("verify"), prepared.features, progress).calibration_


def fit_features_decider(
    prepared: PreparedData, folder: Path, config: FeatureDeciderConfig, settings: Settings, *, name: str,
    data_path: str | Path | None = None, images: bool = True, threads: int | None = None,
    progress: Progress | None = None,
) -> FeatureDecider:
    """Fit the CPU decider on the search split (calibrated on its out-of-fold predictions) and write its folder."""
    search = prepared.part("search")
    encoders = default_encoders(settings, images=images, threads=threads)
    decider = FeatureDecider(config, encoders, name=name).fit(search.samples, prepared.features,
                                                              prepared.dataset.label_spaces, progress)
    decider.save(folder, extra={"data_path": str(Path(data_path or prepared.dataset.source).resolve()),
                                "data": search.name, "fingerprint": search.fingerprint(), "images": images,
                                "tasks": list(prepared.dataset.tasks)})
    prepared.split.save(folder / SPLIT_FILE)
    return decider


def load_trained(folder: Path, settings: Settings, *, progress: bool = True, threads: int | None = None):
    """A trained decider of any kind and the data it was trained on (same split, features rebuilt from the cache)."""
    card = DeciderCard.load(folder)
    data_path = card.training.get("data_path")
    if not data_path:
        raise ConfigError(f"{folder}: the card does not say which data trained it; retrain with `kdsl train`")
    if not Path(data_path).exists():
        raise ConfigError(f"{folder}: the data it was trained on, {data_path}, is gone; put it back or retrain")
    prepared = prepare(data_path, settings, tasks=list(card.tasks), split_path=folder / SPLIT_FILE,
                       images=bool(card.training.get("images", True)), progress=progress)
    return load_decider(folder, settings, **({"threads": threads} if threads else {})), prepared


def fit_collaboration(decider: Decider | FeatureDecider, prepared: PreparedData, rules: RuleSet,
                      progress: Progress | None = None) -> Collaboration:
    """Measure the rules on verify and fit the arbiters there (calibrating the decider first if needed)."""
    if not decider.calibration_.temperatures:
        decider.calibrate(prepared.part("verify"), prepared.features, progress)
    rules = RuleSet(rules=tuple(r for r in rules.rules if r.task in decider.card.tasks))
    rules = with_verify_stats(rules, prepared.part("verify"), prepared.features)
    arbiters = fit_arbiters(prepared.part("verify"), prepared.features, decider, rules, progress=progress)
    return Collaboration(rules=rules, arbiters={k: ArbiterState(config=a.config, weights=a.weights_)
                                                for k, a in arbiters.items()})


def evaluate_decider(
    decider: Decider | FeatureDecider, prepared: PreparedData, rules: RuleSet, *, test: Dataset | None = None,
    test_features: FeatureTable | None = None, progress: Progress | None = None,
) -> EvaluationReport:
    """Evaluate on the sealed test split, or on `test` (a user's labeled file) when given.

    The rules and arbiters fitted on verify are kept in the decider folder (`collaboration.json`) for serving.
    """
    collaboration = fit_collaboration(decider, prepared, rules, progress)
    if decider.folder is not None:
        collaboration.save(decider.folder)
    rules = collaboration.rules
    arbiters = {k: collaboration.arbiter(k) for k in collaboration.arbiters}
    if test is None:
        target, features, part = prepared.part("test"), prepared.features, "test"
    else:
        if test_features is None:
            raise ValueError("test_features are needed with a test dataset")
        target, features, part = test, test_features, test.source or test.name
    return evaluate(target, features, decider, rules, arbiters, search_fallback(prepared.part("search")),
                    part=part, progress=progress)
