"""MCTS over rule sets on the real dialogue task, with the model-free n-gram author drawing terms from the
dialogues the current rules get wrong (deterministic for a seed)."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from kdsl.agents.authors import NgramProposer
from kdsl.rules import AnyOf, Rule, RuleSet
from kdsl.rules.edits import RuleEdit
from kdsl.search import MCTS, SearchConfig

TASK = "dialogue_intent"


def _search(bench, proposer=None, **config):
    config.setdefault("seed", 3)
    strategy = MCTS(SearchConfig(**config))
    return strategy.search(RuleSet(), proposer or NgramProposer(), bench.reward(), bench.report)


def test_mcts_improves_on_the_empty_rule_set(bench):
    result = _search(bench, iterations=60)
    assert result.stop_reason == "iterations" and result.iterations == 60
    assert result.initial_reward == pytest.approx(bench.reward()(RuleSet()))
    assert result.best_reward > result.initial_reward + 0.04  # several real rules found, not noise
    assert len(result.best_rules) >= 3
    # the best rule set is what its node says, and its reward is real
    assert bench.reward()(result.best_rules) == pytest.approx(result.best_reward)
    best = {n.id: n for n in result.nodes}[result.best_node]
    assert best.rule_ids == tuple(r.id for r in result.best_rules.rules)
    path = result.best_path
    assert path[0].parent is None and path[-1].id == result.best_node and len(path) == best.depth + 1
    # the curve: one point per iteration, the best never falls, and it ends at the result's best
    assert [s.iteration for s in result.curve] == list(range(1, 61))
    bests = [s.best_reward for s in result.curve]
    assert bests == sorted(bests) and bests[-1] == result.best_reward
    assert result.totals.calls > 0 and result.tokens == result.totals.prompt_tokens + result.totals.completion_tokens
    assert result.timings.total >= result.timings.author + result.timings.reward + result.timings.report
    # the tree is a tree: every parent exists, visits add up along it
    by_id = {n.id: n for n in result.nodes}
    for n in result.nodes:
        children = [c for c in result.nodes if c.parent == n.id]
        assert n.visits >= sum(c.visits for c in children)
        assert n.parent is None or by_id[n.parent].depth == n.depth - 1


def test_same_seed_same_search(bench):
    a = _search(bench, iterations=40, seed=7)
    b = _search(bench, iterations=40, seed=7)
    assert a.signature() == b.signature()
    assert a.best_rules == b.best_rules and a.tokens == b.tokens
    c = _search(bench, iterations=40, seed=8)
    assert c.signature() != a.signature()


def test_token_budget_stops_it(bench, recording):
    proposer = recording(NgramProposer())
    result = _search(bench, proposer, iterations=10_000, budget_tokens=5_000)
    assert result.stop_reason == "budget_tokens"
    spent = [t for _, t in proposer.calls]
    assert sum(spent) == result.tokens >= 5_000
    assert sum(spent[:-1]) < 5_000  # the call that crossed the budget was the last one
    assert result.iterations < 10_000


def test_seconds_budget_stops_it(bench):
    result = _search(bench, iterations=10**7, budget_seconds=0.3)
    assert result.stop_reason == "budget_seconds"
    assert 0.3 <= result.timings.total < 5


def test_progressive_widening_bounds_children(bench):
    k0, alpha = 1.0, 0.5
    result = _search(bench, iterations=80, widening_k0=k0, widening_alpha=alpha, k=6)
    children = Counter(n.parent for n in result.nodes if n.parent is not None)
    for node in result.nodes:
        assert children[node.id] <= math.ceil(k0 * node.visits ** alpha), node
    assert max(children.values()) >= 3  # it does widen where visits accumulate
    root = result.nodes[0]
    assert root.visits == 81 and children[0] <= 9
    # and a tighter widening gives a narrower, deeper tree
    narrow = _search(bench, iterations=80, widening_k0=1.0, widening_alpha=0.2, k=6)
    assert max(n.depth for n in narrow.nodes) >= max(n.depth for n in result.nodes)
    assert Counter(n.parent for n in narrow.nodes)[0] < children[0]


def test_depth_limit(bench):
    result = _search(bench, iterations=60, max_depth=2)
    assert max(n.depth for n in result.nodes) == 2
    assert len(result.best_rules) <= 2


def test_duplicate_and_no_op_edits_are_skipped(bench, fixed):
    rules = [Rule(label=lab, task=TASK, when=AnyOf(field="user_text", any_of=terms))
             for lab, terms in [("气泡", ("气泡",)), ("能否调光", ("调光",))]]
    edits = (
        RuleEdit(op="add", rule=rules[0]),
        RuleEdit(op="add", rule=rules[0], rationale="the same edit again"),  # duplicate key
        RuleEdit(op="drop", target="r-unknown"),  # changes nothing
        RuleEdit(op="add", rule=rules[1]),
    )
    result = _search(bench, fixed(edits), iterations=50, k=4)
    # from {} the only states are {A}, {B}, {A, B} (two ways): the tree runs out and says so
    assert result.stop_reason == "exhausted"
    assert {frozenset(n.rule_ids) for n in result.nodes} == {frozenset(), frozenset({rules[0].id}),
                                                              frozenset({rules[1].id}),
                                                              frozenset({rules[0].id, rules[1].id})}
    assert result.totals.duplicates >= 1 and result.totals.no_ops >= 1
    siblings = Counter((n.parent, n.edit_key) for n in result.nodes)
    assert max(siblings.values()) == 1
    assert set(result.best_rules.rules) == set(rules)


def test_on_iteration_reports_progress(bench):
    seen = []
    strategy = MCTS(SearchConfig(iterations=12, seed=1), on_iteration=seen.append)
    result = strategy.search(RuleSet(), NgramProposer(), bench.reward(), bench.report)
    assert [p.step.iteration for p in seen] == list(range(1, 13))
    assert seen[-1].best_rules == result.best_rules and {p.strategy for p in seen} == {"mcts"}


def test_config_is_validated():
    with pytest.raises(ValueError, match="widening_alpha"):
        SearchConfig(widening_alpha=0)
    with pytest.raises(ValueError, match="iterations"):
        SearchConfig(iterations=0)
