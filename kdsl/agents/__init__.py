"""The agents: authors (write rules, `kdsl.agents.authors`), verifier (scores them), decider and arbiter (decide
together)."""

from kdsl.agents.authors import AuthorConfig, RuleAuthor, parse_edits
from kdsl.agents.verifier import RuleVerdict, TaskVerdict, Verdict, Verifier, VerifierConfig, majority_fallback

__all__ = [
    "AuthorConfig", "RuleAuthor", "RuleVerdict", "TaskVerdict", "Verdict", "Verifier", "VerifierConfig",
    "majority_fallback", "parse_edits",
]
