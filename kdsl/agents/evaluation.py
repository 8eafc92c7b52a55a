"""Honest evaluation of the decider alone, the rules alone and both together, on data the system never trained on.

Rule confidences and the stacked arbiter's weights come from the verify split; scores come from the given labeled
samples (the sealed test split, or a user's file). Weighted F1 is the metric of the paper and the challenge;
"overall" is the mean of the tasks' weighted F1, as the challenge reports it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pydantic import BaseModel, ConfigDict, Field
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from kdsl.agents.arbiter import POLICIES, Arbiter, ArbiterConfig, Decision
from kdsl.agents.decider import Decider, LabelDistribution
from kdsl.agents.verifier import Verifier, majority_fallback
from kdsl.data.sample import Dataset, Sample
from kdsl.rules import PairedBootstrap, Rule, RuleEngine, RuleSet, Scores, paired_bootstrap, score
from kdsl.tools.features import FeatureTable, SampleFeatures

DECIDER, RULES = "decider", "rules"
Features = FeatureTable | dict[str, SampleFeatures]


def together(policy: str) -> str:
    return f"together:{policy}"


class ClassRow(BaseModel):
    model_config = ConfigDict(frozen=True)

    label: str
    precision: float
    recall: float
    f1: float
    support: int


class ModeResult(BaseModel):
    """How one mode did on one task."""

    model_config = ConfigDict(frozen=True)

    mode: str
    task: str
    scores: Scores
    per_class: tuple[ClassRow, ...]
    confusion_labels: tuple[str, ...]
    confusion: tuple[tuple[int, ...], ...] = Field(description="rows: gold label, columns: predicted label.")
    sources: dict[str, int] = Field(default_factory=dict, description="Which source won, for the together modes.")


class Comparison(BaseModel):
    model_config = ConfigDict(frozen=True)

    task: str
    a: str
    b: str
    bootstrap: PairedBootstrap


class EvaluationReport(BaseModel):
    """Everything `kdsl eval` measured, as written to evaluation.json."""

    model_config = ConfigDict(frozen=True)

    data: str
    part: str
    decider: str
    n: dict[str, int]
    n_rules: dict[str, int]
    stack_weights: dict[str, float]
    temperatures: dict[str, float]
    modes: tuple[str, ...]
    results: tuple[ModeResult, ...]
    overall: dict[str, float] = Field(description="mode -> mean over tasks of weighted F1.")
    comparisons: tuple[Comparison, ...]
    decisions: tuple[Decision, ...] = Field(default=(), description="The stacked policy's decisions, explained.")

    def result(self, mode: str, task: str) -> ModeResult:
        for r in self.results:
            if r.mode == mode and r.task == task:
                return r
        raise KeyError(f"no result for mode {mode!r} on task {task!r}")


def fired_rules(rules: Sequence[Rule], samples: Sequence[Sample], features: Features) -> list[list[Rule]]:
    """For each sample, the rules that fire on it (rules of other tasks never do)."""
    if not rules or not samples:
        return [[] for _ in samples]
    return RuleEngine([features[s.id] for s in samples], [s.task for s in samples]).fired(rules)


def with_verify_stats(rules: RuleSet, verify: Dataset, features: Features) -> RuleSet:
    """The rules with their statistics measured on the verify split (what the arbiter trusts them by)."""
    labeled = [s for s in verify.samples if s.label is not None]
    if not rules.rules or not labeled:
        return rules
    engine = RuleEngine([features[s.id] for s in labeled], [s.task for s in labeled])
    stats = Verifier().rule_stats(list(rules.rules), engine, [s.label for s in labeled])
    return RuleSet(rules=tuple(r.model_copy(update={"stats": st}) for r, st in zip(rules.rules, stats, strict=True)))


def fit_arbiters(
    verify: Dataset, features: Features, decider: Decider, rules: RuleSet,
    configs: Sequence[ArbiterConfig] = tuple(ArbiterConfig(policy=p) for p in POLICIES),
    progress: Callable[[int], None] | None = None,
) -> dict[str, Arbiter]:
    """One arbiter per policy, the stacked one fitted on verify (rules must carry verify statistics)."""
    labeled = [s for s in verify.samples if s.label is not None]
    dists = decider.predict(labeled, features, progress)
    fired = fired_rules(list(rules.rules), labeled, features)
    arbiters = {}
    for config in configs:
        arbiter = Arbiter(config)
        if config.policy == "stacked":
            arbiter.fit(dists, fired, [s.label for s in labeled])
        arbiters[together(config.policy)] = arbiter
    return arbiters


def _mode_result(mode: str, task: str, gold: list[str], pred: list[str | None],
                 sources: dict[str, int] | None = None) -> ModeResult:
    labels = sorted({*gold, *(p for p in pred if p is not None)})
    shown = [p if p is not None else "(abstain)" for p in pred]
    p, r, f, s = precision_recall_fscore_support(gold, shown, labels=labels, zero_division=0)
    matrix = confusion_matrix(gold, shown, labels=labels)
    return ModeResult(
        mode=mode, task=task, scores=score(gold, pred),
        per_class=tuple(ClassRow(label=lab, precision=float(pi), recall=float(ri), f1=float(fi), support=int(si))
                        for lab, pi, ri, fi, si in zip(labels, p, r, f, s, strict=True)),
        confusion_labels=tuple(labels), confusion=tuple(tuple(int(x) for x in row) for row in matrix),
        sources=sources or {},
    )


def evaluate(
    test: Dataset,
    features: Features,
    decider: Decider,
    rules: RuleSet,
    arbiters: dict[str, Arbiter],
    fallback: dict[str, str],
    *,
    part: str = "test",
    n_resamples: int = 1000,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> EvaluationReport:
    """Score every mode on the labeled samples of `test`, per task, with paired bootstrap comparisons.

    `rules` must carry verify statistics (see `with_verify_stats`); `fallback` is the label the rules-alone mode
    predicts where no rule fires (the search split's majority label).
    """
    labeled = [s for s in test.samples if s.label is not None]
    dists: list[LabelDistribution] = decider.predict(labeled, features, progress)
    fired = fired_rules(list(rules.rules), labeled, features)
    decisions = {name: arbiter.decide_all(dists, fired) for name, arbiter in arbiters.items()}
    engine_pred = [max(f, key=lambda r: r.confidence).label if f else None for f in fired]

    modes = (DECIDER, RULES, *arbiters)
    results, comparisons, overall = [], [], {}
    tasks = list(dict.fromkeys(s.task for s in labeled))
    for task in tasks:
        idx = [i for i, s in enumerate(labeled) if s.task == task]
        gold = [labeled[i].label for i in idx]  # type: ignore[misc]
        preds: dict[str, list[str | None]] = {
            DECIDER: [dists[i].best for i in idx],
            RULES: [engine_pred[i] if engine_pred[i] is not None else fallback.get(task) for i in idx],
        }
        sources: dict[str, dict[str, int]] = {}
        for name, ds in decisions.items():
            preds[name] = [ds[i].label for i in idx]
            counts: dict[str, int] = {}
            for i in idx:
                counts[ds[i].source] = counts.get(ds[i].source, 0) + 1
            sources[name] = counts
        for mode in modes:
            results.append(_mode_result(mode, task, gold, preds[mode], sources.get(mode)))
        for name in arbiters:
            for base in (DECIDER, RULES):
                comparisons.append(Comparison(task=task, a=name, b=base, bootstrap=paired_bootstrap(
                    gold, preds[name], preds[base], n_resamples=n_resamples, seed=seed)))
    for mode in modes:
        per_task = [r.scores.weighted_f1 for r in results if r.mode == mode]
        overall[mode] = sum(per_task) / len(per_task) if per_task else 0.0
    stacked = decisions.get(together("stacked"), [])
    return EvaluationReport(
        data=test.name, part=part, decider=decider.card.name,
        n={t: sum(1 for s in labeled if s.task == t) for t in tasks},
        n_rules={t: len(rules.for_task(t)) for t in tasks},
        stack_weights=dict(arbiters[together("stacked")].weights_) if together("stacked") in arbiters else {},
        temperatures=dict(decider.calibration_.temperatures),
        modes=modes, results=tuple(results), overall=overall, comparisons=tuple(comparisons),
        decisions=tuple(stacked),
    )


def search_fallback(search: Dataset) -> dict[str, str]:
    """The majority label of each task on the search split: what the rules-alone mode says where none fires."""
    return majority_fallback([s.label for s in search.samples], [s.task for s in search.samples])
