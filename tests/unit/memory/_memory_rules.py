"""Small builders of rules and statistics for the memory tests."""

from __future__ import annotations

from kdsl.rules import Rule, RuleStats, wilson_lower_bound

TASK = "dialogue_intent"


def stats(support: int, correct: int, n: int = 60, label_count: int = 20) -> RuleStats:
    return RuleStats(
        n=n, support=support, correct=correct, coverage=support / n,
        precision=correct / support if support else 0.0, recall=correct / label_count,
        precision_lower=wilson_lower_bound(correct, support), overlaps=1, conflicts=0,
    )


def rule(label: str, terms: list[str], statement: str = "", *, task: str = TASK, field: str = "user_text",
         **kw) -> Rule:
    return Rule(label=label, task=task, when={"field": field, "any_of": terms}, statement=statement, **kw)
