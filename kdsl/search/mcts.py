"""UCT Monte Carlo Tree Search over rule sets: states are rule sets, actions are the proposer's edits.

One iteration:
  _select          descend from the root by UCT until a node that may grow (progressive widening) or cannot
  _expand          take that node's next proposed edit (asking the proposer for k edits when none is left)
  _evaluate        the new state's reward
  _backpropagate   add it to the visits and value sums of the path

Evaluation is the child's own reward, with no rollout. A rollout would have to call the author for every step
of a throwaway trajectory: that is where all the cost (tokens, seconds) lies, while the reward itself is exact and
costs milliseconds. So the tree spends every author call on states it keeps, and uses the cheap reward twice: to
value a new child, and to order a node's fresh proposals best-first (the first child a node opens is the edit that
looks best now; widening opens the others as the node earns visits).

A node's value is by default the best reward found below it, not the mean: the reward is deterministic and the
search wants one best rule set, so a state is worth the best set reachable from it, and a mean would punish a
promising subtree for the poor siblings its exploration tried (`backup="mean"` gives classic UCT). Values are
normalised to [0, 1] over the rewards seen so far before UCT adds its exploration term: raw rewards differ by
hundredths of F1, which any constant c would otherwise drown. The defaults (c = 0.2, k0 = 1, alpha = 0.5, max
backup) were the best of a small grid with the n-gram proposer on the MDSIRC dialogue task at a fixed token budget.
"""

from __future__ import annotations

import logging
import math

from kdsl.rules.rule import RuleSet
from kdsl.search.base import (
    ReportFn,
    RewardFn,
    SearchResult,
    SearchRun,
    SearchStrategy,
    TreeNode,
    derive_seed,
)
from kdsl.search.proposer import EditProposer

logger = logging.getLogger(__name__)


class MCTS(SearchStrategy):
    """UCT with progressive widening, a depth limit and budgets (see `SearchConfig`).

    Deterministic for a fixed `config.seed` and a deterministic proposer, unless a seconds budget cuts it short.
    """

    name = "mcts"

    def search(self, initial: RuleSet, proposer: EditProposer, reward: RewardFn, report_fn: ReportFn) -> SearchResult:
        run = self._run(proposer, reward, report_fn)
        root = TreeNode(id=0, parent=None, rules=initial, reward=run.evaluate(initial), iteration=0)
        root.visits, root.value_sum, root.best = 1, root.reward, root.reward
        run.offer(root.id, initial, root.reward)
        self._nodes = [root]
        self._low = self._high = root.reward
        iteration = 0
        while (stop := run.stop_reason(iteration)) is None:
            if root.closed:
                stop = "exhausted"
                break
            iteration += 1
            leaf = self._select(root)
            child = self._expand(leaf, run, iteration)
            node = child if child is not None else leaf  # nothing new to add: revisit the leaf
            value = self._evaluate(node, run)
            self._backpropagate(node, value)
            run.record(iteration, value, len(self._nodes))
        nodes = [n.to_model() for n in self._nodes]
        logger.info("mcts stopped (%s) after %d iterations: best %.4f from %.4f, %d nodes, %d tokens", stop,
                    iteration, run.best_reward, root.reward, len(nodes), run.tokens)
        return run.result(nodes, root.reward, iteration, stop)

    # -- the four steps -----------------------------------------------------------------------------------------------
    def _select(self, root: TreeNode) -> TreeNode:
        """Descend by UCT to the first node that may take a new child (or has nowhere left to go)."""
        node = root
        while True:
            open_children = [c for c in node.children if not c.closed]
            if node.depth >= self.config.max_depth:
                return node
            if not node.exhausted and (len(node.children) < self._widening_limit(node) or not open_children):
                return node  # it may grow: progressive widening allows another child, or all others are done
            if not open_children:
                return node
            node = max(open_children, key=lambda c, parent=node: self._uct(parent, c))  # first of ties: stable

    def _expand(self, node: TreeNode, run: SearchRun, iteration: int) -> TreeNode | None:
        """Add the node's next proposed edit as a child; None when it has nothing new (or no tokens are left)."""
        if node.depth >= self.config.max_depth:
            return None
        if not node.pending and not node.exhausted:
            if not run.can_propose():
                return None
            edits = run.propose(node.rules, derive_seed(self.config.seed, node.id, node.rounds))
            node.rounds += 1
            avoid = node.path_keys() | {c.key for c in node.children}
            fresh = run.successors(node.rules, edits, seen=node.seen, avoid=avoid)
            scored = [(edit, rules, run.evaluate(rules)) for edit, rules in fresh]
            node.pending = sorted(scored, key=lambda t: -t[2])  # best-looking first; stable, so ties keep order
            node.empty_rounds = 0 if node.pending else node.empty_rounds + 1
            if node.empty_rounds >= self.config.empty_rounds:
                node.exhausted = True  # the proposer had nothing new for this state, again
                self._close(node)
                return None
        if not node.pending:
            return None
        edit, rules, value = node.pending.pop(0)
        child = TreeNode(id=len(self._nodes), parent=node, rules=rules, reward=value, iteration=iteration, edit=edit)
        node.children.append(child)
        self._nodes.append(child)
        run.offer(child.id, rules, value)
        if child.depth >= self.config.max_depth:
            child.exhausted = True
            self._close(child)
        return child

    def _evaluate(self, node: TreeNode, run: SearchRun) -> float:
        """The state's reward (memoised by the reward, so a revisit costs a lookup); no rollout, see the module doc."""
        return run.evaluate(node.rules)

    def _backpropagate(self, node: TreeNode | None, value: float) -> None:
        self._low, self._high = min(self._low, value), max(self._high, value)
        while node is not None:
            node.visits += 1
            node.value_sum += value
            node.best = max(node.best, value)
            node = node.parent

    # -- helpers ------------------------------------------------------------------------------------------------------
    def _widening_limit(self, node: TreeNode) -> int:
        """Progressive widening: how many children the node may have at its visit count."""
        return math.ceil(self.config.widening_k0 * max(1, node.visits) ** self.config.widening_alpha)

    def _uct(self, parent: TreeNode, child: TreeNode) -> float:
        if self.config.backup == "max":
            value = max(child.best, child.reward)
        else:
            value = child.value_sum / child.visits if child.visits else child.reward
        span = self._high - self._low
        q = (value - self._low) / span if span > 0 else 0.5
        return q + self.config.exploration * math.sqrt(math.log(max(parent.visits, 1)) / max(child.visits, 1))

    def _close(self, node: TreeNode | None) -> None:
        """Mark explored-out subtrees closed, walking up while each parent is done too, so selection skips them."""
        while node is not None and (node.exhausted or node.depth >= self.config.max_depth) and not node.pending \
                and all(c.closed for c in node.children):
            node.closed = True
            node = node.parent
