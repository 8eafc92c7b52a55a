"""The arbiter's policies, the stacked fit and the decider's temperature fit, on real rule objects."""

from __future__ import annotations

import numpy as np
import pytest

from kdsl.agents.arbiter import Arbiter, ArbiterConfig
from kdsl.agents.decider import LabelDistribution, fit_temperature, softmax
from kdsl.rules import Rule, RuleStats
from kdsl.rules.condition import AnyOf

LABELS = ("退款", "物流", "发票")


def rule(label: str, lower: float, term: str = "钱") -> Rule:
    stats = RuleStats(n=50, support=10, correct=9, coverage=0.2, precision=0.9, recall=0.5, precision_lower=lower,
                      overlaps=0, conflicts=0)
    return Rule(label=label, task="t", when=AnyOf(field="user_text", any_of=(term,)), statement=f"{term} -> {label}",
                stats=stats)


def dist(probs: tuple[float, ...], sid: str = "s") -> LabelDistribution:
    return LabelDistribution(sample_id=sid, task="t", labels=LABELS, probs=probs)


def test_rules_first_overrides_only_above_the_bar():
    d = dist((0.1, 0.8, 0.1))
    arb = Arbiter(ArbiterConfig(policy="rules_first", rule_bar=0.6))
    strong = arb.decide(d, [rule("退款", 0.7)])
    assert (strong.label, strong.source) == ("退款", "rule")
    assert strong.fired_rules[0].label == "退款" and strong.fired_rules[0].precision_lower == 0.7
    weak = arb.decide(d, [rule("退款", 0.5)])
    assert (weak.label, weak.source) == ("物流", "decider")
    assert weak.decider_top[0] == ("物流", pytest.approx(0.8))


def test_decider_first_defers_to_rules_only_when_unsure():
    arb = Arbiter(ArbiterConfig(policy="decider_first", decider_bar=0.6))
    sure = arb.decide(dist((0.1, 0.8, 0.1)), [rule("退款", 0.3)])
    assert (sure.label, sure.source) == ("物流", "decider")
    unsure = arb.decide(dist((0.3, 0.4, 0.3)), [rule("退款", 0.3)])
    assert (unsure.label, unsure.source) == ("退款", "rule")
    no_rule = arb.decide(dist((0.3, 0.4, 0.3)), [])
    assert (no_rule.label, no_rule.source) == ("物流", "decider")


def test_abstains_below_the_bar():
    arb = Arbiter(ArbiterConfig(policy="decider_first", abstain_below=0.5))
    d = arb.decide(dist((0.3, 0.4, 0.3)), [])
    assert d.label is None and d.source == "abstain"


def test_stacked_learns_to_trust_precise_rules_and_ignore_useless_ones():
    # The decider is wrong (prefers 物流) on the samples where a precise 退款 rule fires and the gold is 退款.
    dists = [dist((0.2, 0.7, 0.1), f"s{i}") for i in range(10)] + [dist((0.1, 0.8, 0.1), f"t{i}") for i in range(10)]
    fired = [[rule("退款", 0.8)]] * 10 + [[]] * 10
    gold = ["退款"] * 10 + ["物流"] * 10
    arb = Arbiter(ArbiterConfig(policy="stacked"))
    weights = arb.fit(dists, fired, gold).weights_
    assert weights["t"] > 0
    decisions = arb.decide_all(dists, fired)
    assert [d.label for d in decisions] == gold
    assert decisions[0].source == "stacked" and decisions[-1].source == "decider"

    # A rule that is always wrong gets weight 0: the decider alone stands.
    bad = Arbiter(ArbiterConfig(policy="stacked"))
    assert bad.fit(dists[10:], [[rule("退款", 0.8)]] * 10, gold[10:]).weights_["t"] == 0.0


def test_temperature_fit_cools_an_overconfident_decider():
    rng = np.random.default_rng(0)
    scores, gold = [], []
    for _ in range(200):
        g = int(rng.integers(3))
        s = rng.normal(0, 1, 3) * 8  # overconfident logits, right only by chance
        s[g] += 4
        scores.append(s)
        gold.append(g)
    t, before, after = fit_temperature(scores, gold)
    assert t > 1.5 and after < before
    assert softmax(np.array([0.0, 0.0]), 1.0) == pytest.approx([0.5, 0.5])
