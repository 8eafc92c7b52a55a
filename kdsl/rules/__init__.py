"""The rule language, the compiled engine, rule statistics and rule-set metrics."""

from kdsl.rules.analysis import RuleAnalysis, RuleStats, wilson_lower_bound
from kdsl.rules.condition import (
    AllOf,
    And,
    AnyOf,
    Condition,
    Not,
    Or,
    Regex,
    compile_regex,
    leaves,
    matched_leaves,
    n_terms,
)
from kdsl.rules.engine import ABSTAIN, RuleEngine, RuleSetPrediction
from kdsl.rules.metrics import (
    OutOfScopeScores,
    PairedBootstrap,
    Scores,
    find_oos_label,
    out_of_scope_scores,
    paired_bootstrap,
    score,
    with_fallback,
)
from kdsl.rules.normalize import normalize
from kdsl.rules.rule import Provenance, Rule, RuleSet, RuleStatus, atoms, parse_rule

__all__ = [
    "ABSTAIN", "AllOf", "And", "AnyOf", "Condition", "Not", "Or", "OutOfScopeScores", "PairedBootstrap", "Provenance",
    "Regex",
    "Rule", "RuleAnalysis", "RuleEngine", "RuleSet", "RuleSetPrediction", "RuleStats", "RuleStatus", "Scores",
    "atoms", "compile_regex", "leaves", "matched_leaves", "n_terms", "normalize", "paired_bootstrap", "parse_rule",
    "score", "find_oos_label", "out_of_scope_scores",
    "wilson_lower_bound", "with_fallback",
]
