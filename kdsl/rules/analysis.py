"""Per-rule statistics over a rule-firing matrix (in the spirit of Snorkel's LFAnalysis).

One object serves the verifier, the search reward and the CLI table. Shapes: `fired` is (n_samples, n_rules)
bool; labels are strings; a sample's gold label may be None (unlabeled), which counts for coverage only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict


def wilson_lower_bound(successes: int, trials: int, z: float = 1.96) -> float:
    """Lower end of the Wilson score interval for a binomial proportion (0 when there are no trials)."""
    if trials == 0:
        return 0.0
    p = successes / trials
    denom = 1 + z * z / trials
    centre = p + z * z / (2 * trials)
    margin = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    return max(0.0, (centre - margin) / denom)


class RuleStats(BaseModel):
    """How one rule did on one split. Rates are over the samples of the rule's task."""

    model_config = ConfigDict(frozen=True)

    n: int  # labeled samples of the rule's task in the split
    support: int  # samples it fires on
    correct: int  # fires and the gold label is the rule's label
    coverage: float
    precision: float  # 0 when it never fires
    recall: float
    precision_lower: float  # Wilson lower bound of precision (z = 1.96)
    overlaps: int  # fires together with another rule
    conflicts: int  # fires together with a rule of another label
    faults: int = 0  # times the rule could not be applied (counted by the engine), it abstained then


class RuleAnalysis:
    """Statistics of rules over one split.

    Args:
        fired: (n, r) bool, rule j fires on sample i (already restricted to each rule's task).
        rule_labels: the label each rule predicts, length r.
        gold: the gold label of each sample, length n (None = unlabeled).
        applicable: (n, r) bool, sample i belongs to rule j's task; default all True.
        faults: per-rule fault counts from the engine, length r.
    """

    def __init__(
        self,
        fired: np.ndarray,
        rule_labels: Sequence[str],
        gold: Sequence[str | None],
        applicable: np.ndarray | None = None,
        faults: Sequence[int] | None = None,
    ):
        n, r = fired.shape
        if len(rule_labels) != r or len(gold) != n:
            raise ValueError(f"shapes disagree: fired {fired.shape}, {len(rule_labels)} labels, {len(gold)} gold")
        self.fired = fired.astype(bool, copy=False)
        self.rule_labels = list(rule_labels)
        self.gold = np.array([g if g is not None else "" for g in gold], dtype=object)
        self.labeled = np.array([g is not None for g in gold])
        self.applicable = np.ones_like(self.fired) if applicable is None else applicable.astype(bool, copy=False)
        self.faults = list(faults) if faults is not None else [0] * r

    def correct_matrix(self) -> np.ndarray:
        """(n, r) bool: the rule fires and its label is the gold label."""
        hits = self.gold[:, None] == np.array(self.rule_labels, dtype=object)[None, :]
        return self.fired & hits & self.labeled[:, None]

    def stats(self) -> list[RuleStats]:
        fired = self.fired & self.labeled[:, None]
        support = fired.sum(0)
        correct = self.correct_matrix().sum(0)
        n_task = (self.applicable & self.labeled[:, None]).sum(0)
        label_count = {lab: int(((self.gold == lab) & self.labeled).sum()) for lab in set(self.rule_labels)}

        # Overlaps and conflicts, vectorised: per sample, how many rules fire, and how many with each label.
        labels = sorted(set(self.rule_labels))
        onehot = np.zeros((len(self.rule_labels), len(labels)), dtype=np.int32)
        onehot[np.arange(len(self.rule_labels)), [labels.index(x) for x in self.rule_labels]] = 1
        per_label = fired.astype(np.int32) @ onehot  # (n, n_labels)
        total = per_label.sum(1)  # (n,)
        same = per_label[:, [labels.index(x) for x in self.rule_labels]]  # (n, r): fired rules sharing j's label
        overlaps = (fired & (total[:, None] > 1)).sum(0)
        conflicts = (fired & ((total[:, None] - same) > 0)).sum(0)

        out = []
        for j, lab in enumerate(self.rule_labels):
            s, c, n = int(support[j]), int(correct[j]), int(n_task[j])
            out.append(RuleStats(
                n=n, support=s, correct=c,
                coverage=s / n if n else 0.0,
                precision=c / s if s else 0.0,
                recall=c / label_count[lab] if label_count[lab] else 0.0,
                precision_lower=wilson_lower_bound(c, s),
                overlaps=int(overlaps[j]), conflicts=int(conflicts[j]), faults=int(self.faults[j]),
            ))
        return out
