"""The arbiter: rules and the decider decide together under a named policy, and every decision explains itself.

Policies:
- `rules_first`: a fired rule whose precision lower bound (measured on verify) reaches `rule_bar` overrides the
  decider; otherwise the decider's top label.
- `decider_first`: the decider's top label when its calibrated probability reaches `decider_bar`; below it, the
  most confident fired rule (if any) decides.
- `stacked`: a log-linear model fitted on verify: score(label) = log p_decider(label) + w * v(label), where v is
  the precision lower bound of the best fired rule for that label (0 if none). One weight per task, chosen by
  verify log-likelihood over a grid, so it cannot overfit the few verify samples much.
`abstain_below` turns a low-confidence decision into an abstention (label None).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from kdsl.agents.decider import LabelDistribution
from kdsl.rules import Rule

Policy = Literal["rules_first", "decider_first", "stacked"]
POLICIES: tuple[Policy, ...] = ("rules_first", "decider_first", "stacked")
Source = Literal["rule", "decider", "stacked", "abstain"]
STACK_WEIGHTS = (0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0)


class ArbiterConfig(BaseModel):
    """The policy and its bars."""

    model_config = ConfigDict(frozen=True)

    policy: Policy = "stacked"
    rule_bar: float = Field(0.5, ge=0, le=1, description="rules_first: rule precision lower bound that overrides.")
    decider_bar: float = Field(0.5, ge=0, le=1, description="decider_first: decider probability it trusts itself at.")
    abstain_below: float | None = Field(None, ge=0, le=1, description="Abstain when the final confidence is lower.")


class FiredRule(BaseModel):
    """A rule that fired on the sample, with the statistics that make it trustworthy (or not)."""

    model_config = ConfigDict(frozen=True)

    id: str
    label: str
    statement: str
    condition: str
    precision: float
    precision_lower: float
    support: int

    @classmethod
    def of(cls, rule: Rule) -> FiredRule:
        st = rule.stats
        return cls(id=rule.id, label=rule.label, statement=rule.statement, condition=rule.when.render(),
                   precision=st.precision if st else 0.0, precision_lower=st.precision_lower if st else 0.0,
                   support=st.support if st else 0)


class Decision(BaseModel):
    """One prediction and its explanation: the rules that fired, what the decider thought, which source won."""

    model_config = ConfigDict(frozen=True)

    sample_id: str
    task: str
    label: str | None = Field(description="None when the arbiter abstains.")
    confidence: float
    source: Source
    policy: Policy
    fired_rules: tuple[FiredRule, ...] = ()
    decider_top: tuple[tuple[str, float], ...] = ()


def _rule_votes(dist: LabelDistribution, fired: Sequence[Rule]) -> np.ndarray:
    """v(label): the best precision lower bound among fired rules of that label, over the decider's labels."""
    votes = np.zeros(len(dist.labels))
    index = {lab: i for i, lab in enumerate(dist.labels)}
    for rule in fired:
        i = index.get(rule.label)
        if i is not None:
            votes[i] = max(votes[i], rule.confidence)
    return votes


def _stack(dist: LabelDistribution, votes: np.ndarray, weight: float) -> np.ndarray:
    logits = np.log(np.maximum(np.array(dist.probs), 1e-12)) + weight * votes
    logits -= logits.max()
    p = np.exp(logits)
    return p / p.sum()


class Arbiter:
    """Combines a decider distribution and the rules fired on a sample. `fit` learns the stacked weights."""

    def __init__(self, config: ArbiterConfig | None = None, weights: dict[str, float] | None = None):
        self.config = config or ArbiterConfig()
        self.weights_: dict[str, float] = dict(weights or {})  # task -> stacking weight (fitted or loaded)

    def fit(self, dists: Sequence[LabelDistribution], fired: Sequence[Sequence[Rule]],
            gold: Sequence[str | None]) -> Arbiter:
        """Choose each task's stacking weight (`weights_`) by log-likelihood of the gold labels; returns self."""
        for task in sorted({d.task for d in dists}):
            rows = [(d, _rule_votes(d, f), d.labels.index(g)) for d, f, g in zip(dists, fired, gold, strict=True)
                    if d.task == task and g is not None and g in d.labels]
            if not rows:
                continue

            def nll(w: float, rows=rows) -> float:
                return float(np.mean([-math.log(max(_stack(d, v, w)[g], 1e-12)) for d, v, g in rows]))

            self.weights_[task] = min(STACK_WEIGHTS, key=lambda w: (round(nll(w), 9), w))
        return self

    def decide(self, dist: LabelDistribution, fired: Sequence[Rule]) -> Decision:
        """The decision for one sample. `fired` are the rules (with verify statistics) that fire on it."""
        c = self.config
        ranked = sorted(fired, key=lambda r: -r.confidence)
        explained = tuple(FiredRule.of(r) for r in ranked)
        top = tuple(dist.top(3))
        label, confidence, source = dist.best, dist.confidence, "decider"
        if c.policy == "rules_first":
            if ranked and ranked[0].confidence >= c.rule_bar:
                label, confidence, source = ranked[0].label, ranked[0].confidence, "rule"
        elif c.policy == "decider_first":
            if dist.confidence < c.decider_bar and ranked:
                label, confidence, source = ranked[0].label, ranked[0].confidence, "rule"
        else:
            votes = _rule_votes(dist, ranked)
            p = _stack(dist, votes, self.weights_.get(dist.task, 0.0))
            best = int(np.argmax(p))
            label, confidence = dist.labels[best], float(p[best])
            source = "stacked" if votes[best] > 0 and self.weights_.get(dist.task, 0.0) > 0 else "decider"
        if c.abstain_below is not None and confidence < c.abstain_below:
            label, source = None, "abstain"
        return Decision(sample_id=dist.sample_id, task=dist.task, label=label, confidence=confidence,
                        source=source, policy=c.policy, fired_rules=explained, decider_top=top)  # type: ignore[arg-type]

    def decide_all(self, dists: Sequence[LabelDistribution], fired: Sequence[Sequence[Rule]]) -> list[Decision]:
        return [self.decide(d, f) for d, f in zip(dists, fired, strict=True)]
