"""The proposer protocol (`EditProposer`): what an author reads before proposing edits (the error report) and what
it gives back (a proposal)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from kdsl.rules.edits import RuleEdit
from kdsl.rules.engine import RuleEngine
from kdsl.rules.metrics import Scores, score, with_fallback
from kdsl.rules.rule import RuleSet
from kdsl.tools.features import SampleFeatures

MAX_FIELD_CHARS = 300  # per field in an example: keeps author prompts short on small models


class ExampleView(BaseModel):
    """A sample as the author sees it: its gold label, what was predicted, and its feature text (truncated)."""

    model_config = ConfigDict(frozen=True)

    sample_id: str
    label: str
    predicted: str | None = None
    rule_id: str | None = Field(None, description="The rule that made the (wrong) prediction, if any.")
    fields: dict[str, str]


class RuleView(BaseModel):
    model_config = ConfigDict(frozen=True)

    rule_id: str
    label: str
    statement: str
    condition: str
    support: int
    precision: float


class ErrorReport(BaseModel):
    """Where the current rules (completed by the fallback decider) go wrong on the search split."""

    model_config = ConfigDict(frozen=True)

    task: str
    labels: tuple[str, ...]
    scores: Scores
    rules: tuple[RuleView, ...]
    confusions: tuple[tuple[str, str, int], ...] = Field(description="(gold, predicted, count), worst first.")
    uncovered: tuple[ExampleView, ...] = Field(description="No rule fires and the fallback is wrong.")
    misfired: tuple[ExampleView, ...] = Field(description="A rule fires with the wrong label.")


class Proposal(BaseModel):
    """An author's answer: valid edits, and what it cost. `invalid` counts dropped output by reason."""

    model_config = ConfigDict(frozen=True)

    edits: tuple[RuleEdit, ...]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    invalid: dict[str, int] = Field(default_factory=dict)


class EditProposer(Protocol):
    """Anything that proposes rule edits: the LLM author, a scripted author in tests, random edits."""

    name: str

    def propose(self, rules: RuleSet, report: ErrorReport, k: int, *, seed: int = 0) -> Proposal: ...


def _view(f: SampleFeatures, fields: Sequence[str]) -> dict[str, str]:
    return {name: text[:MAX_FIELD_CHARS] for name in fields if (text := f.field(name))}


def build_error_report(
    task: str,
    rules: RuleSet,
    engine: RuleEngine,
    features: Mapping[str, SampleFeatures],
    gold: Sequence[str],
    fallback: Sequence[str | None],
    labels: Sequence[str],
    *,
    fields: Sequence[str] = ("user_text", "last_user_text", "image_text", "image_labels"),
    max_examples: int = 8,
    seed: int = 0,
) -> ErrorReport:
    """Score the rule set on the engine's batch (all of `task`) and pick examples of each kind of error.

    `fallback` is the decider's prediction per sample (used where no rule fires).
    """
    rule_list = [r for r in rules.rules if r.task == task]
    fired = engine.fire_matrix(rule_list)
    prediction = engine.predict(rule_list, fired=fired)
    together = with_fallback(list(prediction.labels), list(fallback))
    rng = np.random.default_rng(seed)

    def pick(idx: list[int]) -> list[int]:
        return sorted(rng.choice(idx, size=min(max_examples, len(idx)), replace=False).tolist()) if idx else []

    uncovered = [i for i, j in enumerate(prediction.rule_index) if j < 0 and together[i] != gold[i]]
    misfired = [i for i, j in enumerate(prediction.rule_index) if j >= 0 and prediction.labels[i] != gold[i]]
    confusions = Counter((g, p) for g, p in zip(gold, together, strict=True) if p is not None and g != p)
    support = fired.sum(0)
    correct = (fired & (np.array(gold, dtype=object)[:, None] == np.array([r.label for r in rule_list],
                                                                            dtype=object)[None, :])).sum(0)
    return ErrorReport(
        task=task,
        labels=tuple(labels),
        scores=score(list(gold), together),
        rules=tuple(RuleView(rule_id=r.id, label=r.label, statement=r.statement, condition=r.when.render(),
                             support=int(s), precision=float(c / s) if s else 0.0)
                    for r, s, c in zip(rule_list, support, correct, strict=True)),
        confusions=tuple((g, p, n) for (g, p), n in confusions.most_common(10)),
        uncovered=tuple(ExampleView(sample_id=engine.ids[i], label=gold[i], predicted=together[i],
                                    fields=_view(features[engine.ids[i]], fields)) for i in pick(uncovered)),
        misfired=tuple(ExampleView(sample_id=engine.ids[i], label=gold[i], predicted=prediction.labels[i],
                                   rule_id=rule_list[prediction.rule_index[i]].id,
                                   fields=_view(features[engine.ids[i]], fields)) for i in pick(misfired)),
    )
