"""The verifier: scores rules and rule sets on a split and accepts only rules that hold there."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from kdsl.rules.analysis import RuleAnalysis, RuleStats
from kdsl.rules.engine import RuleEngine
from kdsl.rules.metrics import PairedBootstrap, Scores, paired_bootstrap, score, with_fallback
from kdsl.rules.rule import Rule, RuleSet


class VerifierConfig(BaseModel):
    """When a rule is good enough to keep."""

    model_config = ConfigDict(frozen=True)

    min_support: int = Field(3, ge=1, description="A rule must fire on at least this many labeled samples.")
    min_precision_lower: float = Field(
        0.5, ge=0, le=1, description="Wilson lower bound (95%) of precision a rule must reach."
    )
    min_precision: float = Field(0.0, ge=0, le=1, description="Precision a rule must reach.")
    bootstrap_resamples: int = Field(1000, ge=100, description="Resamples of the paired bootstrap.")
    seed: int = 0


class RuleVerdict(BaseModel):
    """One rule's statistics on the split, and whether the verifier accepts it."""

    model_config = ConfigDict(frozen=True)

    rule_id: str
    label: str
    task: str
    condition: str  # rendered in words
    statement: str
    stats: RuleStats
    accepted: bool
    reason: str
    folds: int | None = Field(None, description="Cross-fitted verification: how many folds' searches proposed it.")


class TaskVerdict(BaseModel):
    """The rule set on one task: alone, completed by a fallback predictor, and the fallback alone."""

    model_config = ConfigDict(frozen=True)

    task: str
    rules: Scores
    fallback_name: str
    fallback: Scores
    rules_with_fallback: Scores
    bootstrap: PairedBootstrap | None = Field(None, description="(rules + fallback) minus fallback.")


class Verdict(BaseModel):
    """Everything `kdsl rules check` prints and writes."""

    model_config = ConfigDict(frozen=True)

    split: str
    n_samples: int
    config: VerifierConfig
    rules: tuple[RuleVerdict, ...]
    tasks: tuple[TaskVerdict, ...]

    @property
    def accepted(self) -> list[str]:
        return [r.rule_id for r in self.rules if r.accepted]


def majority_fallback(gold: Sequence[str | None], tasks: Sequence[str]) -> dict[str, str]:
    """The most frequent label of each task (ties: the alphabetically first), the simplest honest baseline."""
    by_task: dict[str, Counter[str]] = {}
    for g, t in zip(gold, tasks, strict=True):
        if g is not None:
            by_task.setdefault(t, Counter())[g] += 1
    return {t: min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0] for t, c in by_task.items()}


class Verifier:
    """Scores rules on one split. Stateless apart from its config, so one instance serves a whole session."""

    def __init__(self, config: VerifierConfig | None = None):
        self.config = config or VerifierConfig()

    def judge(self, stats: RuleStats) -> tuple[bool, str]:
        """Accept a rule, or say why not."""
        c = self.config
        if stats.faults:
            return False, f"failed to apply {stats.faults} time(s)"
        if stats.support < c.min_support:
            return False, f"support {stats.support} < {c.min_support}"
        if stats.precision_lower < c.min_precision_lower:
            return False, f"precision lower bound {stats.precision_lower:.2f} < {c.min_precision_lower:.2f}"
        if stats.precision < c.min_precision:
            return False, f"precision {stats.precision:.2f} < {c.min_precision:.2f}"
        return True, f"precision {stats.precision:.2f} (lower bound {stats.precision_lower:.2f}) on {stats.support}"

    def rule_stats(self, rules: Sequence[Rule], engine: RuleEngine, gold: Sequence[str | None]) -> list[RuleStats]:
        fired = engine.fire_matrix(rules)
        faults = [engine.fault_counts.get(r.id, 0) for r in rules]
        return RuleAnalysis(fired, [r.label for r in rules], gold, engine.applicable(rules), faults).stats()

    def check(
        self,
        rules: RuleSet,
        engine: RuleEngine,
        gold: Sequence[str | None],
        *,
        split: str = "all",
        fallback: dict[str, str] | None = None,
    ) -> Verdict:
        """Per-rule statistics and verdicts, and per-task scores of the rule set.

        The rule set ranks firing rules by the precision lower bound measured on this same split, so the
        set-level scores here are in-sample; an honest estimate applies verify-split confidences to `test`.
        `fallback` maps each task to the label predicted where the rules abstain (default: majority label).
        """
        rule_list = list(rules.rules)
        stats = self.rule_stats(rule_list, engine, gold)
        verdicts = []
        for rule, st in zip(rule_list, stats, strict=True):
            ok, why = self.judge(st)
            verdicts.append(RuleVerdict(rule_id=rule.id, label=rule.label, task=rule.task,
                                        condition=rule.when.render(), statement=rule.statement,
                                        stats=st, accepted=ok, reason=why))
        fired = engine.fire_matrix(rule_list)
        prediction = engine.predict(rule_list, [s.precision_lower for s in stats], fired=fired)
        fallback_name = "given" if fallback else "majority label"
        fallback = fallback or majority_fallback(gold, list(engine.tasks))
        tasks = []
        for task in dict.fromkeys(engine.tasks.tolist()):
            idx = [i for i, (t, g) in enumerate(zip(engine.tasks, gold, strict=True)) if t == task and g is not None]
            if not idx:
                continue
            y = [gold[i] for i in idx]
            pred = [prediction.labels[i] for i in idx]
            base = [fallback.get(task)] * len(idx)
            together = with_fallback(pred, base)
            boot = paired_bootstrap(y, together, base, n_resamples=self.config.bootstrap_resamples,
                                    seed=self.config.seed)
            tasks.append(TaskVerdict(task=task, rules=score(y, pred), fallback_name=fallback_name,
                                     fallback=score(y, base), rules_with_fallback=score(y, together),
                                     bootstrap=boot))
        return Verdict(split=split, n_samples=len(engine), config=self.config, rules=tuple(verdicts),
                       tasks=tuple(tasks))
