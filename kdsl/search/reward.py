"""The search reward: how good a rule set is on the search split, together with the fallback decider.

reward(rules) = weighted F1 of (the most confident firing rule, else the fallback's label)
                - cost_per_rule * rules - cost_per_term * terms

With the fallback's confidence per sample (a calibrated decider's top probability), a firing rule decides only
where its confidence beats the decider's: the search is rewarded for rules that fix the decider's errors, not for
rules that restate what it already knows.

A rule's confidence is the Wilson lower bound of its precision measured on this same split (`RuleAnalysis`), as
the verifier ranks rules. A rule's firing column and confidence do not depend on the other rules, so both are
cached per rule, and whole rule sets are memoised by what they contain: re-scoring a state the search has seen
costs a dict lookup, a new state a few numpy ops and one `score`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from kdsl.rules.analysis import RuleAnalysis
from kdsl.rules.condition import n_terms
from kdsl.rules.engine import RuleEngine
from kdsl.rules.metrics import score, with_fallback
from kdsl.rules.rule import Rule, RuleSet

logger = logging.getLogger(__name__)

StateKey = frozenset[tuple[str, str]]


class RewardConfig(BaseModel):
    """The price of a rule set's size: small, so that it only breaks near-ties in F1 in favour of fewer terms."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cost_per_rule: float = Field(0.002, ge=0, description="Subtracted from the reward per rule in the set.")
    cost_per_term: float = Field(0.0005, ge=0, description="Subtracted per term or regex in the rules' conditions.")


class RewardBreakdown(BaseModel):
    """One rule set's reward and what it is made of."""

    model_config = ConfigDict(frozen=True)

    weighted_f1: float
    coverage: float  # share of the scored samples on which some rule fires
    n_rules: int
    n_terms: int
    cost: float
    value: float  # weighted_f1 - cost: what the search maximises


def rule_key(rule: Rule) -> str:
    """What decides a rule's behaviour: task, label and the canonical condition (ids may be chosen freely)."""
    return f"{rule.task}|{rule.label}|{rule.when.key}"


def state_key(rules: RuleSet | Sequence[Rule]) -> StateKey:
    """The identity of a rule set as a search state: its rules as (id, behaviour) pairs, order ignored."""
    return frozenset((r.id, rule_key(r)) for r in rules)


class Reward:
    """Scores rule sets on one split. Callable: `reward(rules) -> float`.

    Args:
        engine: the rule engine over the search split (its batch order is the order of `gold` and `fallback`).
        gold: the gold label per sample; unlabeled samples (None) are not scored.
        fallback: the decider's prediction per sample, used where no rule fires (None = it abstains too).
        fallback_confidence: the decider's probability of that prediction per sample (None: rules always win).
        task: score only this task's samples and rules (default: every sample, every rule).
        config: the costs.

    The rules are ranked in a canonical order (by behaviour), so the reward is a function of the set: two paths
    of edits that reach the same rules in another order get one reward. Order only matters on exact ties of
    confidence between rules of different labels.
    """

    def __init__(
        self,
        engine: RuleEngine,
        gold: Sequence[str | None],
        fallback: Sequence[str | None],
        *,
        task: str | None = None,
        config: RewardConfig | None = None,
        fallback_confidence: Sequence[float] | None = None,
    ):
        if len(gold) != len(engine) or len(fallback) != len(engine):
            raise ValueError(f"the engine holds {len(engine)} samples but got {len(gold)} gold labels and "
                             f"{len(fallback)} fallback predictions; pass one of each per sample, in batch order")
        self.engine = engine
        self.task = task
        self.config = config or RewardConfig()
        in_task = engine.task_mask(task) if task is not None else np.ones(len(engine), dtype=bool)
        self._rows = np.flatnonzero(in_task & np.array([g is not None for g in gold], dtype=bool))
        if not len(self._rows):
            raise ValueError(f"no labeled samples{f' of task {task!r}' if task else ''} to score rule sets on")
        scored = set(self._rows.tolist())
        # RuleAnalysis counts precision over labeled samples: samples outside the scored rows count as unlabeled.
        self._analysis_gold = [g if i in scored else None for i, g in enumerate(gold)]
        self._gold = [str(gold[i]) for i in self._rows]
        self._fallback = [fallback[i] for i in self._rows]
        self._fallback_conf = (None if fallback_confidence is None
                               else np.asarray(fallback_confidence, dtype=float)[self._rows])
        self._rules: dict[str, tuple[np.ndarray, float]] = {}  # rule key -> (fired column (n,), confidence)
        self._memo: dict[StateKey, RewardBreakdown] = {}
        self.calls = 0
        self.hits = 0
        self.seconds = 0.0

    @property
    def n_samples(self) -> int:
        """How many samples the reward is measured on."""
        return len(self._rows)

    def __call__(self, rules: RuleSet) -> float:
        return self.breakdown(rules).value

    def breakdown(self, rules: RuleSet) -> RewardBreakdown:
        """The reward of a rule set with its parts (memoised by the set's contents)."""
        start = time.perf_counter()
        self.calls += 1
        chosen = [r for r in rules.rules if self.task is None or r.task == self.task]
        key = state_key(chosen)
        out = self._memo.get(key)
        if out is None:
            out = self._memo[key] = self._compute(chosen)
        else:
            self.hits += 1
        self.seconds += time.perf_counter() - start
        return out

    def confidence(self, rule: Rule) -> float:
        """The rule's Wilson lower bound of precision on this split (what ranks it against other rules)."""
        return self._rule(rule)[1]

    def _rule(self, rule: Rule) -> tuple[np.ndarray, float]:
        key = rule_key(rule)
        cached = self._rules.get(key)
        if cached is None:
            column = self.engine.fires(rule)
            stats = RuleAnalysis(column[:, None], [rule.label], self._analysis_gold).stats()[0]
            cached = self._rules[key] = (column, stats.precision_lower)
        return cached

    def _compute(self, rules: list[Rule]) -> RewardBreakdown:
        ordered = sorted(rules, key=lambda r: (rule_key(r), r.id))
        columns = [self._rule(r) for r in ordered]
        n = len(self.engine)
        fired = np.stack([c for c, _ in columns], axis=1) if columns else np.zeros((n, 0), dtype=bool)
        prediction = self.engine.predict(ordered, [conf for _, conf in columns], fired=fired)
        labels = [prediction.labels[i] for i in self._rows]
        decided = labels
        if self._fallback_conf is not None:
            wins = np.asarray(prediction.confidence)[self._rows] > self._fallback_conf
            decided = [lab if win else None for lab, win in zip(labels, wins.tolist(), strict=True)]
        scores = score(self._gold, with_fallback(decided, self._fallback))
        size = sum(n_terms(r.when) for r in rules)
        cost = self.config.cost_per_rule * len(rules) + self.config.cost_per_term * size
        return RewardBreakdown(
            weighted_f1=scores.weighted_f1,
            coverage=float(np.mean([lab is not None for lab in labels])),
            n_rules=len(rules), n_terms=size, cost=cost, value=scores.weighted_f1 - cost,
        )
