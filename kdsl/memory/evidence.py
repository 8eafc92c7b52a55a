"""How the memory combines the statistics of equivalent rules: one measurement per session, pooled.

A rule's evidence is a map from the session that measured it ("" when unknown) to that session's `RuleStats`.
Writing an equivalent rule (same task, label and condition) from a session already in the map *refreshes* that
session's entry (the newer measurement on the same data replaces the older one, so re-writing or re-importing a
rule never double counts); a new session *adds* an entry. The rule's statistics are the pooled counts of all
entries: n, support, correct, overlaps, conflicts and faults are summed, and coverage, precision, recall and the
Wilson lower bound are recomputed from the sums. Pooling assumes the sessions measured disjoint samples; two
sessions over overlapping splits make the pooled lower bound somewhat optimistic.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from kdsl.rules.analysis import RuleStats, wilson_lower_bound
from kdsl.rules.rule import Rule

Evidence = dict[str, RuleStats]


def source_of(rule: Rule) -> str:
    """The evidence key of a rule's statistics: its session, or "" when it names none."""
    return rule.origin.session or ""


def evidence_of(rule: Rule) -> Evidence:
    return {source_of(rule): rule.stats} if rule.stats is not None else {}


def with_measurement(evidence: Mapping[str, RuleStats], rule: Rule) -> Evidence:
    """The evidence after writing `rule`: its session's entry added or refreshed (unchanged without stats)."""
    out = dict(evidence)
    if rule.stats is not None:
        out[source_of(rule)] = rule.stats
    return out


def pool(evidence: Mapping[str, RuleStats]) -> RuleStats | None:
    """The pooled statistics of several measurements; the measurement itself when there is one; None for none."""
    items = list(evidence.values())
    if not items:
        return None
    if len(items) == 1:
        return items[0]
    n = sum(s.n for s in items)
    support = sum(s.support for s in items)
    correct = sum(s.correct for s in items)
    # Each measurement's count of the label is correct / recall; a measurement with no hit cannot tell its count
    # and is left out of the recall (its correct count is 0, so only the denominator is unknown).
    label_count = sum(round(s.correct / s.recall) for s in items if s.recall > 0)
    return RuleStats(
        n=n, support=support, correct=correct,
        coverage=support / n if n else 0.0,
        precision=correct / support if support else 0.0,
        recall=correct / label_count if label_count else 0.0,
        precision_lower=wilson_lower_bound(correct, support),
        overlaps=sum(s.overlaps for s in items),
        conflicts=sum(s.conflicts for s in items),
        faults=sum(s.faults for s in items),
    )


def dumps(evidence: Mapping[str, RuleStats]) -> str:
    return json.dumps({k: v.model_dump(mode="json") for k, v in evidence.items()}, ensure_ascii=False,
                      sort_keys=True)


def loads(text: str) -> Evidence:
    return {k: RuleStats.model_validate(v) for k, v in json.loads(text or "{}").items()}
