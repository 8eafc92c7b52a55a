"""The search reward on real dialogues: equal to a direct computation, memoised, a function of the set."""

from __future__ import annotations

import pytest

from kdsl.rules import AnyOf, Rule, RuleSet, normalize, score, wilson_lower_bound, with_fallback
from kdsl.search import Reward, RewardConfig

TASK = "dialogue_intent"


def _rule(label: str, *terms: str) -> Rule:
    return Rule(label=label, task=TASK, when=AnyOf(field="user_text", any_of=terms))


HAND_MADE = RuleSet(rules=(
    _rule("适用季节", "季节", "夏天", "冬天"),
    _rule("能否调光", "调光", "亮度"),
    _rule("气泡", "气泡"),
    _rule("商品材质", "材质", "不锈钢"),  # also fires on other labels' dialogues: not a perfect rule
))


def _direct(bench, rules: RuleSet, cost_rule: float, cost_term: float) -> float:
    """By hand: substring matching, Wilson bounds, the most confident firing rule, then the fallback."""
    texts = [normalize(bench.features[i].user_text) for i in bench.engine.ids]
    fires = [[any(normalize(t) in text for t in r.when.any_of) for text in texts] for r in rules]
    conf = []
    for r, col in zip(rules, fires, strict=True):
        support = sum(col)
        correct = sum(c and g == r.label for c, g in zip(col, bench.gold, strict=True))
        conf.append(wilson_lower_bound(correct, support))
    assert len(set(conf)) == len(conf), "the check below assumes no ties of confidence"
    pred = []
    for i in range(len(texts)):
        firing = [j for j in range(len(rules)) if fires[j][i]]
        pred.append(max((conf[j], rules.rules[j].label) for j in firing)[1] if firing else None)
    f1 = score(bench.gold, with_fallback(pred, bench.fallback)).weighted_f1
    n_terms = sum(len(r.when.any_of) for r in rules)
    return f1 - cost_rule * len(rules) - cost_term * n_terms


def test_reward_equals_a_direct_computation(bench):
    reward = bench.reward(config=RewardConfig(cost_per_rule=0.01, cost_per_term=0.003))
    value = reward(HAND_MADE)
    assert value == pytest.approx(_direct(bench, HAND_MADE, 0.01, 0.003), abs=1e-12)
    parts = reward.breakdown(HAND_MADE)
    assert (parts.n_rules, parts.n_terms) == (4, 8)
    assert parts.cost == pytest.approx(0.04 + 0.024)
    assert 0 < parts.coverage < 0.5
    # the rules help over the majority label alone, by a real margin
    empty = reward(RuleSet())
    assert empty == pytest.approx(score(bench.gold, bench.fallback).weighted_f1)
    assert parts.weighted_f1 > empty + 0.05


def test_reward_is_a_memoised_function_of_the_set(bench):
    reward = bench.reward()
    first = reward(HAND_MADE)
    reordered = RuleSet(rules=HAND_MADE.rules[::-1])
    assert reward(reordered) == first
    assert (reward.calls, reward.hits) == (2, 1)
    smaller = RuleSet(rules=HAND_MADE.rules[:2])
    assert reward(smaller) != first
    assert reward.confidence(HAND_MADE.rules[2]) > 0.3  # '气泡' is a precise rule on this data


def test_reward_ignores_other_tasks_and_checks_its_input(bench):
    reward = bench.reward()
    other = Rule(label="x", task="image_scene", when=AnyOf(field="user_text", any_of=("季节",)))
    assert reward(RuleSet(rules=(*HAND_MADE.rules, other))) == reward(HAND_MADE)
    with pytest.raises(ValueError, match="fallback"):
        Reward(bench.engine, bench.gold, bench.fallback[:-1])
    with pytest.raises(ValueError, match="cost_per_rule"):
        RewardConfig(cost_per_rule=-1)
