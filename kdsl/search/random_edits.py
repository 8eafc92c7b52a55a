"""Random edits: a walk that applies one randomly chosen valid proposed edit per step and keeps the best state seen.

The control for the tree and the climb: same proposer, same costs, no use of the reward to choose. At the depth
limit, or at a state with no valid edit, the walk restarts from the initial rule set (whose proposals are cached,
so a restart costs no tokens).
"""

from __future__ import annotations

import logging

import numpy as np

from kdsl.rules.edits import RuleEdit
from kdsl.rules.rule import RuleSet
from kdsl.search.base import (
    ReportFn,
    RewardFn,
    SearchResult,
    SearchStrategy,
    StopReason,
    TreeNode,
    derive_seed,
)
from kdsl.search.proposer import EditProposer

logger = logging.getLogger(__name__)


class RandomEdits(SearchStrategy):
    """Random walk over proposed edits. Nodes are the distinct (state, edit) steps taken, with visit counts."""

    name = "random"

    def search(self, initial: RuleSet, proposer: EditProposer, reward: RewardFn, report_fn: ReportFn) -> SearchResult:
        run = self._run(proposer, reward, report_fn)
        rng = np.random.default_rng(self.config.seed)
        root = TreeNode(id=0, parent=None, rules=initial, reward=run.evaluate(initial), iteration=0, visits=1)
        root.value_sum = root.reward
        run.offer(root.id, initial, root.reward)
        nodes, current, iteration = [root], root, 0
        options: dict[int, list[tuple[RuleEdit, RuleSet]]] = {}  # node id -> its valid proposed edits
        stop: StopReason | None = None
        while (stop := run.stop_reason(iteration)) is None:
            if current.depth >= self.config.max_depth:
                current = root
            if current.id not in options:
                if not run.can_propose():
                    stop = "budget_tokens"
                    break
                edits = run.propose(current.rules, derive_seed(self.config.seed, current.id))
                options[current.id] = run.successors(current.rules, edits, seen=set(), avoid=current.path_keys())
            choices = options[current.id]
            if not choices:
                if current is root:
                    stop = "exhausted"
                    break
                current = root
                continue
            iteration += 1
            edit, rules = choices[int(rng.integers(len(choices)))]
            child = next((c for c in current.children if c.edit is not None and c.edit.key == edit.key), None)
            if child is None:
                child = TreeNode(id=len(nodes), parent=current, rules=rules, reward=run.evaluate(rules),
                                 iteration=iteration, edit=edit)
                current.children.append(child)
                nodes.append(child)
            child.visits += 1
            child.value_sum += child.reward
            run.offer(child.id, child.rules, child.reward)
            run.record(iteration, child.reward, len(nodes))
            current = child
        logger.info("random edits stopped (%s) after %d steps: best %.4f from %.4f", stop, iteration,
                    run.best_reward, root.reward)
        return run.result([n.to_model() for n in nodes], root.reward, iteration, stop)
