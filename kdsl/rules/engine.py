"""The compiled rule engine: rule sets become boolean matrices over a fixed batch of samples.

Every (field, term) and (field, regex) match is computed once per batch and cached as a boolean vector, and every
condition's vector is cached by its canonical key, so re-scoring a rule set during search costs a few numpy ops
per rule, not a pass over the text. Model-written rules are untrusted: a rule that fails to apply abstains and is
counted in `fault_counts`, it never stops a run.
"""

from __future__ import annotations

import functools
import logging
import operator
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict

from kdsl.rules.condition import AllOf, And, AnyOf, Condition, Not, Or, Regex, compile_regex
from kdsl.rules.normalize import normalize, term_at
from kdsl.rules.rule import Rule
from kdsl.tools.features import FIELDS, SampleFeatures

logger = logging.getLogger(__name__)

_JOIN = "\x00"  # cannot occur in a normalised term, so a term never matches across two samples
ABSTAIN = -1


def _fold(op: Callable[[np.ndarray, np.ndarray], np.ndarray], masks: list[np.ndarray]) -> np.ndarray:
    """Pairwise | or & over a few (n,) masks: cheaper than ufunc.reduce, which first stacks them into a matrix.

    With one mask the cached array itself is returned; the engine never writes into a mask in place.
    """
    return functools.reduce(op, masks)


class RuleSetPrediction(BaseModel):
    """Per sample: the winning rule's index (-1 = abstain), its label (None = abstain) and its confidence."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    rule_index: np.ndarray  # (n,) int
    labels: tuple[str | None, ...]
    confidence: np.ndarray  # (n,) float, 0 where it abstains

    @property
    def coverage(self) -> float:
        return float((self.rule_index != ABSTAIN).mean()) if len(self.labels) else 0.0


class RuleEngine:
    """Applies rules to one batch of samples.

    Args:
        features: the samples' features, in batch order.
        tasks: each sample's task; a rule fires only on samples of its own task.
    """

    def __init__(self, features: Sequence[SampleFeatures], tasks: Sequence[str]):
        if len(features) != len(tasks):
            raise ValueError(f"{len(features)} feature rows but {len(tasks)} tasks")
        self.ids = [f.sample_id for f in features]
        self.tasks = np.array(tasks, dtype=object)
        self._features = list(features)
        self._texts: dict[str, list[str]] = {}
        self._joined: dict[str, tuple[str, np.ndarray]] = {}
        self._term_cache: dict[tuple[str, str], np.ndarray] = {}
        self._regex_cache: dict[tuple[str, str], np.ndarray] = {}
        self._cond_cache: dict[str, np.ndarray] = {}
        self._normalized: dict[str, str] = {}  # term -> normalize(term): re-scoring must not re-normalise
        self._task_masks: dict[str, np.ndarray] = {}
        self.fault_counts: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_cached_terms(self) -> int:
        return len(self._term_cache) + len(self._regex_cache)

    def clear_conditions(self) -> None:
        """Forget condition results but keep term matches (what a search sees when a new rule set arrives)."""
        self._cond_cache.clear()

    # -- normalised text, computed per field on first use ------------------------------------------------------
    def texts(self, field: str) -> list[str]:
        """The normalised text of one field for every sample."""
        if field not in self._texts:
            if field not in FIELDS:
                raise KeyError(f"unknown field {field!r}")
            self._texts[field] = [normalize(f.field(field)) for f in self._features]
        return self._texts[field]

    def _joined_field(self, field: str) -> tuple[str, np.ndarray]:
        if field not in self._joined:
            texts = self.texts(field)
            starts = np.zeros(len(texts), dtype=np.int64)
            if texts:
                starts[1:] = np.cumsum([len(t) + 1 for t in texts[:-1]])
            self._joined[field] = (_JOIN.join(texts), starts)
        return self._joined[field]

    # -- leaf matches ---------------------------------------------------------------------------------------------
    def term_mask(self, field: str, term: str) -> np.ndarray:
        """(n,) bool: the normalised term occurs in the field (as a whole word where it is one, see `term_at`).
        One C-speed scan of the joined text per term."""
        term = self._normalized.get(term) or self._normalized.setdefault(term, normalize(term))
        key = (field, term)
        mask = self._term_cache.get(key)
        if mask is None:
            joined, starts = self._joined_field(field)
            mask = np.zeros(len(self.ids), dtype=bool)
            pos = joined.find(term)
            while pos >= 0:
                if not term_at(joined, term, pos):  # inside a longer word (the separator is not a word char)
                    pos = joined.find(term, pos + 1)
                    continue
                i = int(np.searchsorted(starts, pos, side="right")) - 1
                mask[i] = True
                nxt = starts[i + 1] if i + 1 < len(starts) else len(joined)
                pos = joined.find(term, nxt)  # skip the rest of this sample: one hit is enough
            self._term_cache[key] = mask
        return mask

    def regex_mask(self, field: str, pattern: str) -> np.ndarray:
        """(n,) bool: the RE2 pattern matches the normalised field (per sample, so ^ and $ keep their meaning)."""
        key = (field, pattern)
        mask = self._regex_cache.get(key)
        if mask is None:
            compiled = compile_regex(pattern)
            mask = np.fromiter((compiled.search(t) is not None for t in self.texts(field)), bool, len(self.ids))
            self._regex_cache[key] = mask
        return mask

    # -- conditions and rules -------------------------------------------------------------------------------------
    def mask(self, cond: Condition) -> np.ndarray:
        """(n,) bool where the condition holds (ignoring tasks)."""
        key = cond.key
        cached = self._cond_cache.get(key)
        if cached is not None:
            return cached
        if isinstance(cond, AnyOf):
            out = _fold(operator.or_, [self.term_mask(cond.field, t) for t in cond.any_of])
        elif isinstance(cond, AllOf):
            out = _fold(operator.and_, [self.term_mask(cond.field, t) for t in cond.all_of])
        elif isinstance(cond, Regex):
            out = self.regex_mask(cond.field, cond.regex)
        elif isinstance(cond, Not):
            out = ~self.mask(cond.not_)
        elif isinstance(cond, And):
            out = _fold(operator.and_, [self.mask(c) for c in cond.and_])
        elif isinstance(cond, Or):
            out = _fold(operator.or_, [self.mask(c) for c in cond.or_])
        else:  # pragma: no cover - the Condition union is closed
            raise TypeError(f"not a condition: {type(cond).__name__}")
        self._cond_cache[key] = out
        return out

    def task_mask(self, task: str) -> np.ndarray:
        mask = self._task_masks.get(task)
        if mask is None:
            mask = self._task_masks[task] = self.tasks == task
        return mask

    def fires(self, rule: Rule) -> np.ndarray:
        """(n,) bool where the rule fires; all False (and a fault counted) if it cannot be applied."""
        try:
            return self.mask(rule.when) & self.task_mask(rule.task)
        except (ValueError, KeyError, TypeError, MemoryError) as e:
            self.fault_counts[rule.id] += 1
            logger.warning("rule %s abstains: it cannot be applied (%s)", rule.id, e)
            return np.zeros(len(self.ids), dtype=bool)

    def fire_matrix(self, rules: Sequence[Rule]) -> np.ndarray:
        """(n, r) bool: column j is where rule j fires."""
        if not rules:
            return np.zeros((len(self.ids), 0), dtype=bool)
        return np.stack([self.fires(r) for r in rules], axis=1)

    def fired(self, rules: Sequence[Rule]) -> list[list[Rule]]:
        """For each sample, the rules that fire on it, in the given order (rules of other tasks never do): the one
        answer to "which rules fire here" that evaluation, prediction, the memory and the report share."""
        rules = list(rules)
        if not rules:
            return [[] for _ in range(len(self.ids))]
        return [[r for r, f in zip(rules, row, strict=True) if f] for row in self.fire_matrix(rules)]

    def applicable(self, rules: Sequence[Rule]) -> np.ndarray:
        """(n, r) bool: sample i is of rule j's task."""
        if not rules:
            return np.zeros((len(self.ids), 0), dtype=bool)
        return np.stack([self.task_mask(r.task) for r in rules], axis=1)

    def predict(
        self, rules: Sequence[Rule], confidence: Sequence[float] | None = None, fired: np.ndarray | None = None
    ) -> RuleSetPrediction:
        """Each sample takes the label of its most confident firing rule (earlier rule on ties), or abstains.

        `confidence` defaults to each rule's `confidence` (Wilson lower bound of its precision).
        """
        fired = self.fire_matrix(rules) if fired is None else fired
        conf = np.array([r.confidence for r in rules] if confidence is None else confidence, dtype=np.float64)
        n = len(self.ids)
        if not len(rules):
            return RuleSetPrediction(rule_index=np.full(n, ABSTAIN), labels=(None,) * n, confidence=np.zeros(n))
        scores = np.where(fired, conf[None, :], -np.inf)
        best = scores.argmax(axis=1)
        any_fired = fired.any(axis=1)
        index = np.where(any_fired, best, ABSTAIN)
        labels = tuple(rules[j].label if j != ABSTAIN else None for j in index.tolist())
        return RuleSetPrediction(rule_index=index, labels=labels,
                                 confidence=np.where(any_fired, conf[best], 0.0))
