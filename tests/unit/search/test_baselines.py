"""Greedy hill-climbing and random edits: the same interface as MCTS, on the same real task."""

from __future__ import annotations

import pytest

from kdsl.agents.authors import NgramProposer
from kdsl.rules import RuleSet
from kdsl.search import MCTS, STRATEGIES, Greedy, RandomEdits, SearchConfig


def test_greedy_climbs_until_nothing_improves(bench):
    result = Greedy(SearchConfig(iterations=100, seed=2)).search(RuleSet(), NgramProposer(), bench.reward(),
                                                                 bench.report)
    assert result.strategy == "greedy" and result.stop_reason in ("converged", "exhausted")
    assert result.best_reward > result.initial_reward + 0.04
    path = result.best_path
    rewards = [n.reward for n in path]
    assert rewards == sorted(rewards) and len(set(rewards)) == len(rewards)  # each step strictly improves
    assert path[-1].id == result.best_node and result.best_reward == rewards[-1]
    # each step took the best candidate of its round
    for prev, nxt in zip(path, path[1:], strict=False):
        round_ = [n for n in result.nodes if n.parent == prev.id]
        assert nxt.reward == max(n.reward for n in round_)


def test_random_edits_keeps_the_best_seen_and_is_seeded(bench):
    def run(seed):
        return RandomEdits(SearchConfig(iterations=40, seed=seed)).search(RuleSet(), NgramProposer(), bench.reward(),
                                                                         bench.report)

    a, b = run(5), run(5)
    assert a.signature() == b.signature()
    assert a.stop_reason == "iterations" and a.best_reward > a.initial_reward
    assert a.best_reward == max(n.reward for n in a.nodes)
    assert run(6).signature() != a.signature()


@pytest.mark.parametrize("name", ["mcts", "greedy", "random"])
def test_every_strategy_respects_a_token_budget(bench, name):
    strategy = STRATEGIES[name](SearchConfig(iterations=1000, budget_tokens=4000, seed=0))
    result = strategy.search(RuleSet(), NgramProposer(), bench.reward(), bench.report)
    assert result.strategy == name
    assert result.stop_reason in ("budget_tokens", "converged", "exhausted")
    assert result.tokens < 4000 + 2000  # at most one call past the budget
    assert result.best_reward >= result.initial_reward
    assert STRATEGIES["mcts"] is MCTS
