"""The agents: author (writes rules), verifier (scores them), decider and arbiter (decide together)."""

from kdsl.agents.verifier import RuleVerdict, TaskVerdict, Verdict, Verifier, VerifierConfig, majority_fallback

__all__ = ["RuleVerdict", "TaskVerdict", "Verdict", "Verifier", "VerifierConfig", "majority_fallback"]
