"""What every search strategy shares: its config, its result, and the bookkeeping of budgets, costs and the best state.

A strategy is one class with one verb, `search(initial, proposer, reward, report_fn) -> SearchResult`. States are
rule sets; actions are the proposer's edits; `reward(rules)` scores a state and `report_fn(rules)` gives the error
report the proposer reads for it. `SearchRun` holds the accounting so each strategy's file holds only its idea.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from kdsl.rules.edits import EditOp, RuleEdit, apply_edit
from kdsl.rules.rule import RuleSet
from kdsl.search.proposer import EditProposer, ErrorReport
from kdsl.search.reward import StateKey, state_key

logger = logging.getLogger(__name__)

StopReason = Literal["iterations", "budget_seconds", "budget_tokens", "exhausted", "converged"]
ReportFn = Callable[[RuleSet], ErrorReport]
RewardFn = Callable[[RuleSet], float]  # a `Reward`, or any function of a rule set


class SearchConfig(BaseModel):
    """Budgets and knobs of a search. A search stops at the first budget it reaches."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    iterations: int = Field(50, ge=1, description="Iterations (MCTS: select-expand-evaluate-backpropagate passes).")
    budget_seconds: float | None = Field(None, gt=0, description="Wall-clock budget; checked between iterations.")
    budget_tokens: int | None = Field(
        None, ge=1, description="Author tokens (prompt + completion); checked before each author call, so the call "
        "that crosses it is the last.")
    k: int = Field(4, ge=1, description="Edits asked of the proposer for one state at a time.")
    exploration: float = Field(
        0.2, ge=0, description="UCT exploration constant c; values are normalised to [0, 1] over the rewards seen.")
    backup: Literal["max", "mean"] = Field(
        "max", description="MCTS node value: the best reward found below it (a deterministic single-player search: a "
        "state is worth the best set reachable from it) or the mean (classic UCT).")
    widening_alpha: float = Field(
        0.5, gt=0, le=1, description="Progressive widening: a node may have ceil(k0 * visits^alpha) children.")
    widening_k0: float = Field(1.0, gt=0, description="Progressive widening: children allowed at the first visit.")
    max_depth: int = Field(16, ge=1, description="Most edits between the initial rule set and any state.")
    empty_rounds: int = Field(2, ge=1, description="MCTS: proposer rounds in a row with nothing new before a state "
                              "counts as exhausted (a sampling author, asked again with another seed, may find more).")
    seed: int = Field(0, ge=0, description="Seeds the proposer calls and random choices.")


class SearchNode(BaseModel):
    """One state the search reached: the edit that led there from its parent, and what the search learned of it."""

    model_config = ConfigDict(frozen=True)

    id: int
    parent: int | None
    depth: int
    op: EditOp | None = None  # None for the initial state
    edit_key: str | None = None
    target: str | None = Field(None, description="Id of the rule the edit refined or dropped.")
    new_rule: str | None = Field(None, description="Id of the rule the edit added (or refined into).")
    rule_ids: tuple[str, ...]
    visits: int
    value: float = Field(description="Mean reward backed up through the node (a trajectory: its own reward).")
    best: float = Field(description="Best reward backed up through the node (its own reward if never visited).")
    reward: float
    iteration: int = Field(description="Iteration that created it (0: the initial state).")


class SearchStep(BaseModel):
    """The search after one iteration: a point of the best-reward curve."""

    model_config = ConfigDict(frozen=True)

    iteration: int
    reward: float  # of the state evaluated in this iteration
    best_reward: float
    elapsed_seconds: float
    tokens: int  # author tokens spent so far
    n_nodes: int


class SearchProgress(BaseModel):
    """What `on_iteration` receives after each iteration: enough to draw progress or checkpoint the best set."""

    model_config = ConfigDict(frozen=True)

    strategy: str
    step: SearchStep
    best_rules: RuleSet


class ProposerTotals(BaseModel):
    """What the proposer was asked and what it cost."""

    model_config = ConfigDict(frozen=True)

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0  # as the proposer reported them
    edits: int = 0  # valid edits it returned
    duplicates: int = 0  # skipped: an edit with the same key was already proposed for that state
    no_ops: int = 0  # skipped: the edit leaves the set unchanged or returns to an earlier state of the path
    invalid: dict[str, int] = Field(default_factory=dict)  # the proposer's dropped output, by reason

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class SearchTimings(BaseModel):
    """Where the wall-clock time went, in seconds. `bookkeeping` is the rest: tree, selection, copies."""

    model_config = ConfigDict(frozen=True)

    author: float
    report: float
    reward: float
    bookkeeping: float
    total: float


class SearchResult(BaseModel):
    """The outcome of one search: the best rule set, the tree (or trajectory), the curve and the costs."""

    model_config = ConfigDict(frozen=True)

    strategy: str
    proposer: str
    config: SearchConfig
    initial_reward: float
    best_rules: RuleSet
    best_reward: float
    best_node: int
    nodes: tuple[SearchNode, ...]
    curve: tuple[SearchStep, ...]
    totals: ProposerTotals
    timings: SearchTimings
    iterations: int
    stop_reason: StopReason

    @property
    def improvement(self) -> float:
        return self.best_reward - self.initial_reward

    @property
    def tokens(self) -> int:
        return self.totals.tokens

    @property
    def best_path(self) -> list[SearchNode]:
        """The nodes from the initial state to the best one: the edits that made the best rule set."""
        by_id = {n.id: n for n in self.nodes}
        path = []
        node: SearchNode | None = by_id[self.best_node]
        while node is not None:
            path.append(node)
            node = by_id[node.parent] if node.parent is not None else None
        return path[::-1]

    def signature(self) -> list[tuple]:
        """Everything but the timings: equal for two runs with one seed and a deterministic proposer."""
        return [(n.id, n.parent, n.edit_key, n.rule_ids, n.visits, round(n.value, 12), round(n.best, 12),
                 round(n.reward, 12))
                for n in self.nodes] + [(s.iteration, s.reward, s.best_reward, s.tokens) for s in self.curve]


@dataclass(eq=False)
class TreeNode:
    """A state while a search runs (mutable); `to_model` freezes it into a `SearchNode` for the result."""

    id: int
    parent: TreeNode | None
    rules: RuleSet
    reward: float
    iteration: int
    edit: RuleEdit | None = None
    visits: int = 0
    value_sum: float = 0.0
    best: float = float("-inf")  # the best reward backed up through it
    children: list[TreeNode] = field(default_factory=list)
    # MCTS: the proposals not yet expanded (edit, state, reward), edit keys already taken, proposer rounds asked
    # (and how many in a row brought nothing new), whether the proposer has nothing new for this state, and
    # whether the whole subtree is explored.
    pending: list[tuple[RuleEdit, RuleSet, float]] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    rounds: int = 0
    empty_rounds: int = 0
    exhausted: bool = False
    closed: bool = False
    depth: int = field(init=False)
    key: StateKey = field(init=False)

    def __post_init__(self) -> None:
        self.depth = 0 if self.parent is None else self.parent.depth + 1
        self.key = state_key(self.rules)

    def path_keys(self) -> set[StateKey]:
        """The states of this node and its ancestors: where an edit must not lead back to."""
        keys, node = set(), self
        while node is not None:
            keys.add(node.key)
            node = node.parent
        return keys

    def to_model(self) -> SearchNode:
        e = self.edit
        new_rule = e.rule.id if e is not None and e.rule is not None else None
        return SearchNode(
            id=self.id, parent=self.parent.id if self.parent else None, depth=self.depth,
            op=e.op if e else None, edit_key=e.key if e else None, target=e.target if e else None, new_rule=new_rule,
            rule_ids=tuple(r.id for r in self.rules.rules), visits=self.visits,
            value=self.value_sum / self.visits if self.visits else self.reward, best=max(self.best, self.reward),
            reward=self.reward,
            iteration=self.iteration,
        )


def derive_seed(seed: int, *parts: int) -> int:
    """A seed for one proposer call, fixed by the search seed and where the call happens (node, round)."""
    return int(np.random.SeedSequence([seed, *parts]).generate_state(1)[0])


class SearchRun:
    """The accounting of one search: budgets, timings, the proposer's costs, the best state, the curve.

    Strategies call `propose`, `evaluate` and `record`; `result` assembles the `SearchResult`.
    """

    def __init__(
        self,
        strategy: str,
        config: SearchConfig,
        proposer: EditProposer,
        reward: RewardFn,
        report_fn: ReportFn,
        on_iteration: Callable[[SearchProgress], None] | None = None,
    ):
        self.strategy = strategy
        self.config = config
        self.proposer = proposer
        self.reward = reward
        self.report_fn = report_fn
        self.on_iteration = on_iteration
        self.started = time.perf_counter()
        self.author_seconds = self.report_seconds = self.reward_seconds = 0.0
        self.calls = self.prompt_tokens = self.completion_tokens = self.edits = self.duplicates = self.no_ops = 0
        self.proposer_seconds = 0.0
        self.invalid: Counter[str] = Counter()
        self.curve: list[SearchStep] = []
        self.best_reward = float("-inf")
        self.best_rules = RuleSet()
        self.best_node = 0
        self._reports: dict[StateKey, ErrorReport] = {}

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def stop_reason(self, iterations_done: int) -> StopReason | None:
        """The budget that is spent, if any (checked before an iteration starts)."""
        c = self.config
        if iterations_done >= c.iterations:
            return "iterations"
        if c.budget_seconds is not None and self.elapsed >= c.budget_seconds:
            return "budget_seconds"
        if c.budget_tokens is not None and self.tokens >= c.budget_tokens:
            return "budget_tokens"
        return None

    def can_propose(self) -> bool:
        return self.config.budget_tokens is None or self.tokens < self.config.budget_tokens

    # -- the three costly things a strategy does ------------------------------------------------------------------
    def evaluate(self, rules: RuleSet) -> float:
        start = time.perf_counter()
        value = self.reward(rules)
        self.reward_seconds += time.perf_counter() - start
        return value

    def report(self, rules: RuleSet) -> ErrorReport:
        key = state_key(rules)
        cached = self._reports.get(key)
        if cached is None:
            start = time.perf_counter()
            cached = self._reports[key] = self.report_fn(rules)
            self.report_seconds += time.perf_counter() - start
        return cached

    def propose(self, rules: RuleSet, seed: int) -> list[RuleEdit]:
        """Ask the proposer for `k` edits of this state; counts tokens, seconds and invalid output."""
        report = self.report(rules)
        start = time.perf_counter()
        proposal = self.proposer.propose(rules, report, self.config.k, seed=seed)
        self.author_seconds += time.perf_counter() - start
        self.calls += 1
        self.prompt_tokens += proposal.prompt_tokens
        self.completion_tokens += proposal.completion_tokens
        self.proposer_seconds += proposal.seconds
        self.invalid.update(proposal.invalid)
        self.edits += len(proposal.edits)
        return list(proposal.edits)

    def successors(
        self, rules: RuleSet, edits: Iterable[RuleEdit], *, seen: set[str], avoid: set[StateKey]
    ) -> list[tuple[RuleEdit, RuleSet]]:
        """The edits that lead somewhere new, with the state each leads to, in the proposer's order.

        `seen` holds the edit keys already taken for this state (updated here); `avoid` the states not to return
        to (the state itself and the path above it), so the search never loops.
        """
        here = state_key(rules)
        out = []
        for edit in edits:
            if edit.key in seen:
                self.duplicates += 1
                continue
            seen.add(edit.key)
            try:
                new = apply_edit(rules, edit)
            except ValueError as e:  # an untrusted edit never stops a search: it is counted and skipped
                self.invalid["cannot_apply"] += 1
                logger.warning("edit %s cannot be applied: %s", edit.key, e)
                continue
            key = state_key(new)
            if key == here or key in avoid:
                self.no_ops += 1
                continue
            out.append((edit, new))
        return out

    # -- progress -------------------------------------------------------------------------------------------------
    def offer(self, node: int, rules: RuleSet, value: float) -> None:
        """Keep the state if it beats the best so far (ties keep the earlier one: deterministic, and smaller)."""
        if value > self.best_reward:
            self.best_reward, self.best_rules, self.best_node = value, rules, node

    def record(self, iteration: int, value: float, n_nodes: int) -> None:
        step = SearchStep(iteration=iteration, reward=value, best_reward=self.best_reward,
                          elapsed_seconds=self.elapsed, tokens=self.tokens, n_nodes=n_nodes)
        self.curve.append(step)
        logger.debug("%s iteration %d: reward %.4f, best %.4f, %d tokens", self.strategy, iteration, value,
                     self.best_reward, self.tokens)
        if self.on_iteration is not None:
            self.on_iteration(SearchProgress(strategy=self.strategy, step=step, best_rules=self.best_rules))

    def result(
        self, nodes: list[SearchNode], initial_reward: float, iterations: int, stop_reason: StopReason
    ) -> SearchResult:
        total = self.elapsed
        spent = self.author_seconds + self.report_seconds + self.reward_seconds
        return SearchResult(
            strategy=self.strategy, proposer=getattr(self.proposer, "name", type(self.proposer).__name__),
            config=self.config, initial_reward=initial_reward, best_rules=self.best_rules,
            best_reward=self.best_reward, best_node=self.best_node, nodes=tuple(nodes), curve=tuple(self.curve),
            totals=ProposerTotals(calls=self.calls, prompt_tokens=self.prompt_tokens,
                                  completion_tokens=self.completion_tokens, seconds=self.proposer_seconds,
                                  edits=self.edits, duplicates=self.duplicates, no_ops=self.no_ops,
                                  invalid=dict(sorted(self.invalid.items()))),
            timings=SearchTimings(author=self.author_seconds, report=self.report_seconds, reward=self.reward_seconds,
                                  bookkeeping=max(0.0, total - spent), total=total),
            iterations=iterations, stop_reason=stop_reason,
        )


class SearchStrategy(ABC):
    """A way to search rule sets. `__init__` stores the config; `search` runs one search and returns its result.

    Args:
        config: budgets and knobs.
        on_iteration: called after every iteration with the progress (progress display, checkpoints).
    """

    name: ClassVar[str]

    def __init__(self, config: SearchConfig | None = None, *,
                 on_iteration: Callable[[SearchProgress], None] | None = None):
        self.config = config or SearchConfig()
        self.on_iteration = on_iteration

    @abstractmethod
    def search(self, initial: RuleSet, proposer: EditProposer, reward: RewardFn, report_fn: ReportFn) -> SearchResult:
        """Search from `initial` with the proposer's edits; return the best rule set found and how."""

    def _run(self, proposer: EditProposer, reward: RewardFn, report_fn: ReportFn) -> SearchRun:
        return SearchRun(self.name, self.config, proposer, reward, report_fn, self.on_iteration)
