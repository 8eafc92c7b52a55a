"""The search's test bench: the real MDSIRC dialogue task, its dialogue features, a majority-label fallback, and
proposers: the model-free n-gram author (substrings of the real misclassified dialogues) and small scripted ones."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from kdsl.agents.verifier import majority_fallback
from kdsl.rules import RuleEngine, RuleSet
from kdsl.rules.edits import RuleEdit
from kdsl.search import ErrorReport, Proposal, Reward, build_error_report
from kdsl.tools.features import SampleFeatures, dialogue_fields

TASK = "dialogue_intent"


@dataclass
class Bench:
    engine: RuleEngine
    gold: list[str]
    fallback: list[str]
    labels: tuple[str, ...]
    features: dict[str, SampleFeatures]

    def reward(self, **kw) -> Reward:
        return Reward(self.engine, self.gold, self.fallback, task=TASK, **kw)

    def report(self, rules: RuleSet) -> ErrorReport:
        return build_error_report(TASK, rules, self.engine, self.features, self.gold, self.fallback, self.labels)


@pytest.fixture(scope="module")
def bench(mdsirc) -> Bench:
    ds = mdsirc.for_task(TASK)
    feats = [SampleFeatures(sample_id=s.id, **dialogue_fields(s)) for s in ds.samples]
    tasks = [s.task for s in ds.samples]
    gold = [s.label for s in ds.samples]
    majority = majority_fallback(gold, tasks)[TASK]
    return Bench(RuleEngine(feats, tasks), gold, [majority] * len(gold), ds.label_spaces[TASK],
                 {f.sample_id: f for f in feats})


@dataclass
class Recording:
    """Wraps a proposer and records each call's seed and tokens (to check budgets and determinism)."""

    inner: object
    name: str = "recording"
    calls: list[tuple[int, int]] = field(default_factory=list)  # (seed, tokens)

    def propose(self, rules: RuleSet, report: ErrorReport, k: int, *, seed: int = 0) -> Proposal:
        p = self.inner.propose(rules, report, k, seed=seed)
        self.calls.append((seed, p.prompt_tokens + p.completion_tokens))
        return p


@dataclass
class Fixed:
    """Returns the same edits for every state, whatever the seed: the search must dedupe and skip no-ops."""

    edits: tuple[RuleEdit, ...]
    name: str = "fixed"
    tokens: int = 10

    def propose(self, rules: RuleSet, report: ErrorReport, k: int, *, seed: int = 0) -> Proposal:
        return Proposal(edits=self.edits[:k], prompt_tokens=self.tokens)


@pytest.fixture
def recording():
    """A factory: `recording(proposer)` records each call's seed and tokens."""
    return Recording


@pytest.fixture
def fixed():
    """A factory: `fixed(edits)` returns the same edits for every state."""
    return Fixed
