"""Search over rule sets: the reward, the strategies (MCTS, greedy, random edits) and the proposer protocol (what
an author reads and gives back). The authors themselves live in `kdsl.agents.authors`."""

from kdsl.search.base import (
    ProposerTotals,
    ReportFn,
    RewardFn,
    SearchConfig,
    SearchNode,
    SearchProgress,
    SearchResult,
    SearchRun,
    SearchStep,
    SearchStrategy,
    SearchTimings,
    StopReason,
)
from kdsl.search.greedy import Greedy
from kdsl.search.mcts import MCTS
from kdsl.search.proposer import EditProposer, ErrorReport, ExampleView, Proposal, RuleView, build_error_report
from kdsl.search.random_edits import RandomEdits
from kdsl.search.reward import Reward, RewardBreakdown, RewardConfig, rule_key, state_key

STRATEGIES: dict[str, type[SearchStrategy]] = {s.name: s for s in (MCTS, Greedy, RandomEdits)}

__all__ = [
    "MCTS", "STRATEGIES", "EditProposer", "ErrorReport", "ExampleView", "Greedy", "Proposal",
    "ProposerTotals", "RandomEdits", "ReportFn", "Reward", "RewardBreakdown", "RewardConfig", "RewardFn",
    "RuleView", "SearchConfig", "SearchNode", "SearchProgress", "SearchResult", "SearchRun", "SearchStep",
    "SearchStrategy", "SearchTimings", "StopReason", "build_error_report", "rule_key", "state_key",
]
