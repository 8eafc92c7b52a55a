"""The seesaw diagnostic: does one decider trained on all tasks lose on some task against per-task deciders, and
do the rules win that loss back?

Every decider gets the same training config (epochs, learning rate, seed): each task's samples are seen equally
often by its own decider and by the joint one. The `features` kind fits a separate head per task, so it has no
seesaw by construction; running it here shows that (delta 0) beside the LoRA kind. A decider already trained with
that config on the same data is reused, so the report can be rebuilt without retraining.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from kdsl.agents.decider import DeciderCard, deciders_dir
from kdsl.agents.decider_kinds import load_decider
from kdsl.agents.evaluation import DECIDER, EvaluationReport, together
from kdsl.agents.feature_decider import HEADS, FeatureDeciderConfig
from kdsl.config import Settings
from kdsl.rules import PairedBootstrap, RuleSet, paired_bootstrap
from kdsl.training.config import TrainConfig
from kdsl.training.lora import StepHook
from kdsl.training.workflow import PreparedData, evaluate_decider, fit_features_decider, prepare, train_and_calibrate

DeciderConfig = TrainConfig | FeatureDeciderConfig

logger = logging.getLogger(__name__)


class SeesawRow(BaseModel):
    model_config = ConfigDict(frozen=True)

    task: str
    n_test: int
    per_task: float  # weighted F1 of the task's own decider
    joint: float  # weighted F1 of the joint decider on the task
    delta: float  # joint - per_task (negative: the seesaw cost)
    joint_with_rules: float  # the joint decider with the rules (stacked arbiter)
    recovered: bool  # the rules bring the joint decider back to (at least) the per-task one
    bootstrap: PairedBootstrap  # joint vs per-task, paired on the test samples


class SeesawReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    data: str
    config: dict
    deciders: dict[str, str]  # "joint" / task -> decider folder
    rows: tuple[SeesawRow, ...]


def _find_trained(settings: Settings, config: DeciderConfig, fingerprint: str, tasks: list[str]) -> Path | None:
    """A decider folder trained with exactly this config on this data and these tasks, if one exists."""
    # Threads change speed, not what is learned: a decider trained with another thread count is the same decider.
    wanted = config.model_dump(mode="json", exclude={"threads"})
    for card_path in sorted(deciders_dir(settings).glob("*/decider.json")):
        try:
            card = DeciderCard.model_validate_json(card_path.read_text(encoding="utf-8"))
        except ValueError:
            continue
        t = card.training
        trained = {k: v for k, v in (t.get("config") or {}).items() if k != "threads"}
        if (trained == wanted and t.get("fingerprint") == fingerprint and sorted(card.tasks) == sorted(tasks)
                and any((card_path.parent / f).is_file() for f in ("calibration.json", HEADS))
                and (card_path.parent / "split.json").is_file()):
            return card_path.parent
    return None


def _decider_for(
    prepared: PreparedData, tasks: list[str], config: DeciderConfig, settings: Settings, data: str | Path,
    images: bool, on_step: StepHook | None, progress: Callable[[int], None] | None,
) -> tuple[Any, PreparedData]:
    subset = prepared if sorted(tasks) == sorted(prepared.dataset.tasks) else PreparedData(
        dataset=prepared.dataset.for_task(tasks[0]),
        split=prepared.split.model_copy(update={p: tuple(i for i in prepared.split.ids(p)  # type: ignore[arg-type]
                                                          if prepared.dataset.get(i).task in tasks)
                                               for p in ("search", "verify", "test")}),
        features=prepared.features)
    train_part = subset.part("search")
    found = _find_trained(settings, config, train_part.fingerprint(), tasks)
    if found is None:
        which = "+".join(tasks) if len(tasks) < len(prepared.dataset.tasks) else "joint"
        kind = "features-" if isinstance(config, FeatureDeciderConfig) else ""
        name = f"seesaw-{kind}{which}-s{config.seed}"
        found = deciders_dir(settings) / name
        logger.info("training %s", name)
        if isinstance(config, FeatureDeciderConfig):
            fit_features_decider(subset, found, config, settings, name=name, data_path=data, images=images)
        else:
            train_and_calibrate(subset, found, config, settings, name=name, data_path=data, images=images,
                                on_step=on_step, progress=progress)
    else:
        logger.info("reusing %s", found)
    return load_decider(found, settings), subset


def run_seesaw(
    data: str | Path, settings: Settings, config: DeciderConfig, rules: RuleSet, *, seed: int = 0,
    images: bool = True, on_stage: Callable[[str], None] | None = None, on_step: StepHook | None = None,
    progress: Callable[[int], None] | None = None,
) -> SeesawReport:
    """Train (or reuse) the joint decider and one decider per task, evaluate each on the test split."""
    prepared = prepare(data, settings, seed=seed, images=images, progress=False)
    tasks = list(prepared.dataset.tasks)
    if len(tasks) < 2:
        raise ValueError(f"{data} has one task ({tasks[0]}); the seesaw needs at least two")
    stage = on_stage or (lambda s: None)
    stage("joint decider")
    joint, _ = _decider_for(prepared, tasks, config, settings, data, images, on_step, progress)
    joint_report = evaluate_decider(joint, prepared, rules, progress=progress)
    reports: dict[str, EvaluationReport] = {}
    folders = {"joint": str(joint.folder)}
    for task in tasks:
        stage(f"{task} decider")
        own, subset = _decider_for(prepared, [task], config, settings, data, images, on_step, progress)
        folders[task] = str(own.folder)
        reports[task] = evaluate_decider(own, subset, RuleSet(), progress=progress)
    rows = []
    for task in tasks:
        per_task = reports[task].result(DECIDER, task)
        j = joint_report.result(DECIDER, task)
        jr = joint_report.result(together("stacked"), task)
        gold_order = [d for d in joint_report.decisions if d.task == task]
        test_ids = [d.sample_id for d in gold_order]
        own_pred = {d.sample_id: d.decider_top[0][0] for d in reports[task].decisions}
        joint_pred = {d.sample_id: d.decider_top[0][0] for d in joint_report.decisions}
        gold = {s.id: s.label for s in prepared.part("test").samples}
        boot = paired_bootstrap([gold[i] for i in test_ids], [joint_pred[i] for i in test_ids],
                                [own_pred[i] for i in test_ids], seed=seed)
        rows.append(SeesawRow(task=task, n_test=per_task.scores.n, per_task=per_task.scores.weighted_f1,
                              joint=j.scores.weighted_f1, delta=j.scores.weighted_f1 - per_task.scores.weighted_f1,
                              joint_with_rules=jr.scores.weighted_f1,
                              recovered=jr.scores.weighted_f1 >= per_task.scores.weighted_f1, bootstrap=boot))
    return SeesawReport(data=str(data), config=config.model_dump(mode="json"), deciders=folders, rows=tuple(rows))
