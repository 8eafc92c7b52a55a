"""A model-free proposer: rules on short substrings of the examples the current rules get wrong.

It reads the same error report as the LLM author and answers with the same `Proposal`, so it serves as the
scripted author of the search's tests and benchmarks, and as a floor any model author should beat. Deterministic
for a seed. Its token counts are what an author's prompt of that report would roughly cost (4 characters a
token), so token budgets behave as they would with a model.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
from pydantic import ValidationError

from kdsl.rules.condition import AnyOf
from kdsl.rules.edits import RuleEdit
from kdsl.rules.normalize import normalize
from kdsl.rules.rule import Provenance, Rule, RuleSet
from kdsl.search.proposer import ErrorReport, Proposal

CHARS_PER_TOKEN = 4


def drop_edits(report: ErrorReport, n: int, below: float) -> list[RuleEdit]:
    """Drops of the (at most n) least precise rules that fire and are right less often than `below`."""
    bad = sorted((r for r in report.rules if r.support and r.precision < below), key=lambda r: (r.precision, r.rule_id))
    return [RuleEdit(op="drop", target=r.rule_id, rationale=f"precision {r.precision:.2f} on {r.support}")
            for r in bad[:n]]


class NgramProposer:
    """Adds `any_of` rules on a random 2-3 character substring of an uncovered or misfired example (for the
    example's gold label), and drops rules that are right less often than `drop_below`.

    Args:
        fields: the example fields substrings are drawn from (those the example has).
        min_chars, max_chars: the substring length range.
        drop_below: rules with a precision under this (and some support) are proposed for dropping.
        completion_tokens_per_edit: the nominal completion tokens counted per edit returned.
    """

    name = "ngram"

    def __init__(self, fields: Sequence[str] = ("user_text",), *, min_chars: int = 2, max_chars: int = 3,
                 drop_below: float = 0.5, completion_tokens_per_edit: int = 40):
        if not 1 <= min_chars <= max_chars:
            raise ValueError(f"need 1 <= min_chars <= max_chars, got {min_chars} and {max_chars}")
        self.fields = tuple(fields)
        self.min_chars, self.max_chars = min_chars, max_chars
        self.drop_below = drop_below
        self.completion_tokens_per_edit = completion_tokens_per_edit

    def propose(self, rules: RuleSet, report: ErrorReport, k: int, *, seed: int = 0) -> Proposal:
        rng = np.random.default_rng(seed)
        invalid: Counter[str] = Counter()
        edits = drop_edits(report, k // 2, self.drop_below)
        examples = [*report.uncovered, *report.misfired]
        for i in rng.permutation(len(examples)).tolist():
            if len(edits) >= k:
                break
            example = examples[i]
            fields = [f for f in self.fields if example.fields.get(f)]
            if not fields:
                invalid["no_text"] += 1
                continue
            field = fields[int(rng.integers(len(fields)))]
            text = example.fields[field]
            n = int(rng.integers(self.min_chars, self.max_chars + 1))
            if len(text) < n:
                invalid["too_short"] += 1
                continue
            start = int(rng.integers(len(text) - n + 1))
            term = text[start:start + n]
            if len(normalize(term).strip()) < n or any(c.isspace() for c in term):
                invalid["blank_term"] += 1
                continue
            try:
                rule = Rule(label=example.label, task=report.task, when=AnyOf(field=field, any_of=(term,)),
                            statement=f"'{term}' in {field} means {example.label}", origin=Provenance(author=self.name))
            except ValidationError:
                invalid["invalid_rule"] += 1
                continue
            edits.append(RuleEdit(op="add", rule=rule, rationale=f"from sample {example.sample_id}"))
        return Proposal(edits=tuple(edits), prompt_tokens=len(report.model_dump_json()) // CHARS_PER_TOKEN,
                        completion_tokens=self.completion_tokens_per_edit * len(edits), invalid=dict(invalid))
