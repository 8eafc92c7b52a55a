"""A model-free author that reads the search split: rules on the substring of a wrong example that best singles
out the example's label across all search samples.

`NgramProposer` draws a substring at random, so most of its rules fire on one sample and never generalise. This
author looks at every term of the example's text a person would write (a word or two-word phrase in English, a 2-4
character n-gram of Chinese; see `kdsl.agents.authors.mined`), measures on the search split how often a
sample containing it carries the example's label, and proposes one of the best few by the Wilson lower bound of
that precision. It is the contrastive keyword mining a person would do by hand, and the default author of
`kdsl discover` when no model is named: it needs nothing pulled, and an LLM author should beat it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
from pydantic import ValidationError

from kdsl.agents.authors.mined import candidate_terms
from kdsl.agents.authors.ngram import CHARS_PER_TOKEN, drop_edits
from kdsl.rules.analysis import wilson_lower_bound
from kdsl.rules.condition import MAX_TERMS, AnyOf
from kdsl.rules.edits import RuleEdit
from kdsl.rules.engine import RuleEngine
from kdsl.rules.normalize import normalize
from kdsl.rules.rule import Provenance, Rule, RuleSet
from kdsl.search.proposer import ErrorReport, Proposal


class ContrastProposer:
    """Puts the most label-specific substring of an uncovered or misfired example into a rule for the example's
    label (widening the label's rule, or adding one), and drops rules that are right less often than `drop_below`.

    Args:
        engine: the rule engine over the search split (its term matches are cached and shared with the reward).
        gold: the search split's gold label per engine row.
        fields: the example fields substrings are drawn from.
        min_chars, max_chars: the length range of Chinese n-grams.
        min_support: a substring must occur in at least this many search samples.
        top: the proposal is drawn from this many best substrings (diversity across iterations).
        drop_below: rules with a precision under this (and some support) are proposed for dropping.
        completion_tokens_per_edit: the nominal completion tokens counted per edit returned.
    """

    name = "contrast"

    def __init__(self, engine: RuleEngine, gold: Sequence[str], fields: Sequence[str] = ("user_text",), *,
                 min_chars: int = 2, max_chars: int = 4, min_support: int = 2, top: int = 3,
                 drop_below: float = 0.5, completion_tokens_per_edit: int = 40):
        if not 1 <= min_chars <= max_chars:
            raise ValueError(f"need 1 <= min_chars <= max_chars, got {min_chars} and {max_chars}")
        if len(gold) != len(engine):
            raise ValueError(f"{len(gold)} gold labels for {len(engine)} search samples")
        self.engine, self.gold = engine, np.array(gold, dtype=object)
        self.fields = tuple(fields)
        self.min_chars, self.max_chars = min_chars, max_chars
        self.min_support, self.top = min_support, top
        self.drop_below = drop_below
        self.completion_tokens_per_edit = completion_tokens_per_edit

    def _ranked(self, field: str, text: str, label: str, taken: set[tuple[str, str]]) -> list[tuple[float, str]]:
        """Substrings of `text` as (precision lower bound for `label` on the search split, term), best first."""
        scored: dict[str, float] = {}
        for term in candidate_terms(normalize(text), self.min_chars, self.max_chars):
            if (field, term) in taken:
                continue
            mask = self.engine.term_mask(field, term)
            hits = int(mask.sum())
            if hits < self.min_support:
                continue
            scored[term] = wilson_lower_bound(int((self.gold[mask] == label).sum()), hits)
        return sorted(((s, t) for t, s in scored.items() if s > 0), key=lambda x: (-x[0], -len(x[1]), x[1]))

    @staticmethod
    def _edit(rules: RuleSet, task: str, label: str, field: str, term: str, why: str) -> RuleEdit:
        """Widen the label's rule on that field with the term (more support on unseen samples than two narrow
        rules), or add a rule when the label has none there yet."""
        grown = next((r for r in rules.rules if r.task == task and r.label == label and isinstance(r.when, AnyOf)
                      and r.when.field == field and len(r.when.any_of) < MAX_TERMS), None)
        if grown is None:
            return RuleEdit(op="add", rationale=why, rule=Rule(
                label=label, task=task, when=AnyOf(field=field, any_of=(term,)),
                statement=f"'{term}' in {field} means {label}", origin=Provenance(author=ContrastProposer.name)))
        terms = (*grown.when.any_of, term)  # type: ignore[union-attr]
        return RuleEdit(op="refine", target=grown.id, rationale=why, rule=Rule(
            label=label, task=task, when=AnyOf(field=field, any_of=terms),
            statement=f"any of {', '.join(map(repr, terms))} in {field} means {label}",
            origin=Provenance(author=ContrastProposer.name, parent=grown.id)))

    def propose(self, rules: RuleSet, report: ErrorReport, k: int, *, seed: int = 0) -> Proposal:
        rng = np.random.default_rng(seed)
        invalid: Counter[str] = Counter()
        edits = drop_edits(report, k // 2, self.drop_below)
        # A term already in a rule would only duplicate or contradict it.
        taken = {(c.field, normalize(t)) for r in rules.rules if isinstance(c := r.when, AnyOf) for t in c.any_of}
        examples = [*report.uncovered, *report.misfired]
        for i in rng.permutation(len(examples)).tolist():
            if len(edits) >= k:
                break
            example = examples[i]
            candidates = [(s, f, t) for f in self.fields if example.fields.get(f)
                          for s, t in self._ranked(f, example.fields[f], example.label, taken)]
            if not candidates:
                invalid["no_specific_term"] += 1
                continue
            candidates.sort(key=lambda x: -x[0])
            bound, field, term = candidates[int(rng.integers(min(self.top, len(candidates))))]
            taken.add((field, term))
            why = f"from sample {example.sample_id}: precision lower bound {bound:.2f} on the search split"
            try:
                edits.append(self._edit(rules, report.task, example.label, field, term, why))
            except ValidationError:
                invalid["invalid_rule"] += 1
        return Proposal(edits=tuple(edits), prompt_tokens=len(report.model_dump_json()) // CHARS_PER_TOKEN,
                        completion_tokens=self.completion_tokens_per_edit * len(edits), invalid=dict(invalid))
