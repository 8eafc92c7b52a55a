"""Greedy hill-climbing over rule sets: the baseline that shows what the tree adds.

Each step asks the proposer for k edits of the current rule set, scores every state they lead to, and moves to
the best one if it beats the current reward. It stops when no proposal improves (after `patience` extra rounds of
proposals for the same state), at the depth limit, or when a budget is spent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from kdsl.rules.rule import RuleSet
from kdsl.search.base import (
    ReportFn,
    RewardFn,
    SearchConfig,
    SearchProgress,
    SearchResult,
    SearchStrategy,
    StopReason,
    TreeNode,
    derive_seed,
)
from kdsl.search.proposer import EditProposer

logger = logging.getLogger(__name__)


class Greedy(SearchStrategy):
    """Hill-climb on the reward. Every candidate scored is kept as a node (visits 0; the path taken has visits 1).

    Args:
        patience: rounds of new proposals for one state that may fail to improve before the climb stops.
    """

    name = "greedy"

    def __init__(self, config: SearchConfig | None = None, *, patience: int = 0,
                 on_iteration: Callable[[SearchProgress], None] | None = None):
        super().__init__(config, on_iteration=on_iteration)
        if patience < 0:
            raise ValueError(f"patience must be 0 or more, got {patience}")
        self.patience = patience

    def search(self, initial: RuleSet, proposer: EditProposer, reward: RewardFn, report_fn: ReportFn) -> SearchResult:
        run = self._run(proposer, reward, report_fn)
        root = TreeNode(id=0, parent=None, rules=initial, reward=run.evaluate(initial), iteration=0, visits=1)
        root.value_sum = root.reward
        run.offer(root.id, initial, root.reward)
        nodes, current, misses, iteration = [root], root, 0, 0
        stop: StopReason | None = None
        while (stop := run.stop_reason(iteration)) is None:
            if current.depth >= self.config.max_depth:
                stop = "exhausted"
                break
            if not run.can_propose():
                stop = "budget_tokens"
                break
            iteration += 1
            edits = run.propose(current.rules, derive_seed(self.config.seed, current.id, current.rounds))
            current.rounds += 1
            fresh = run.successors(current.rules, edits, seen=current.seen, avoid=current.path_keys())
            candidates = []
            for edit, rules in fresh:
                node = TreeNode(id=len(nodes), parent=current, rules=rules, reward=run.evaluate(rules),
                                iteration=iteration, edit=edit)
                node.value_sum = node.reward
                current.children.append(node)
                nodes.append(node)
                candidates.append(node)
            best = max(candidates, key=lambda n: n.reward, default=None)  # first of ties
            if best is not None and best.reward > current.reward:
                best.visits = 1
                run.offer(best.id, best.rules, best.reward)
                current, misses = best, 0
            else:
                misses += 1
            run.record(iteration, best.reward if best is not None else current.reward, len(nodes))
            if misses > self.patience:
                stop = "converged"
                break
        logger.info("greedy stopped (%s) after %d steps: best %.4f from %.4f", stop, iteration, run.best_reward,
                    root.reward)
        return run.result([n.to_model() for n in nodes], root.reward, iteration, stop)
