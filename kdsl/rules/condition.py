"""The closed JSON language of rule conditions. A condition is data: it is validated, never executed.

    {"field": "image_text", "any_of": ["退款", "退货"]}         some term occurs in the field
    {"field": "user_text", "all_of": ["发货", "几天"]}          every term occurs
    {"field": "last_user_text", "regex": "多久.*(到|发)"}      an RE2 pattern matches (linear time, cannot hang)
    {"not": C}   {"and": [C, ...]}   {"or": [C, ...]}

Terms match after `normalize` (case, full/half width): a term that begins or ends with a letter or digit of a
script written with spaces matches only as a whole word there (`cancel` not in `cancellation`); Chinese terms match
as substrings. Regexes see the normalised text too.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from functools import cached_property
from typing import Annotated, Any, ClassVar

import re2
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator

from kdsl.rules.normalize import contains_term, normalize
from kdsl.tools.features import FieldName

MAX_TERMS = 32  # per any_of / all_of
MAX_TERM_CHARS = 64
MAX_REGEX_CHARS = 256
MAX_DEPTH = 5
REGEX_MAX_MEM = 1 << 20  # bytes RE2 may use for one compiled pattern; bigger patterns are refused


def compile_regex(pattern: str) -> Any:
    """Compile with RE2 under a memory bound; raises ValueError with RE2's reason when refused."""
    options = re2.Options()
    options.max_mem = REGEX_MAX_MEM
    options.log_errors = False
    try:
        return re2.compile(pattern, options)
    except re2.error as e:
        reason = e.args[0].decode() if e.args and isinstance(e.args[0], bytes) else str(e)
        raise ValueError(f"invalid or unsupported regex {pattern!r}: {reason} (RE2 syntax: no lookaround, "
                         "no backreferences)") from e


class _Node(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, serialize_by_alias=True)

    def matches(self, fields: Mapping[str, str]) -> bool:
        """Plain evaluation on one sample's normalised fields (the engine's reference semantics)."""
        raise NotImplementedError

    def render(self) -> str:
        """The condition in words, for people and for the memory's documents."""
        raise NotImplementedError

    def children(self) -> tuple[Condition, ...]:
        return ()

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Any:
        copy = super().model_copy(update=update, deep=deep)
        for cached in ("key", "compiled"):  # cached properties of the original would go stale in the copy
            copy.__dict__.pop(cached, None)
        return copy

    @cached_property
    def key(self) -> str:
        """Canonical JSON: equal for conditions that differ only in term order, case or width."""
        return json.dumps(self._canonical(), ensure_ascii=False, sort_keys=True)

    def _canonical(self) -> Any:
        raise NotImplementedError


def _clean_terms(terms: tuple[str, ...]) -> tuple[str, ...]:
    for t in terms:
        if not normalize(t):
            raise ValueError("a term must contain a visible character")
        if len(t) > MAX_TERM_CHARS:
            raise ValueError(f"term {t[:20]!r}... is longer than {MAX_TERM_CHARS} characters")
        if any(ord(c) < 32 for c in t):
            raise ValueError(f"term {t!r} contains a control character or newline")
    return terms


class _Terms(_Node):
    """Shared body of `any_of` and `all_of`: terms looked up as substrings of one field."""

    _op: ClassVar[str]
    _combine: ClassVar[Callable[[Iterable[bool]], bool]]

    field: FieldName = "all_text"

    @property
    def terms(self) -> tuple[str, ...]:
        return getattr(self, self._op)

    def matches(self, fields: Mapping[str, str]) -> bool:
        text = fields[self.field]
        return type(self)._combine(contains_term(text, normalize(t)) for t in self.terms)

    def render(self) -> str:
        return f"{self.field} contains {self._op.replace('_', ' ')} [{', '.join(self.terms)}]"

    def _canonical(self) -> Any:
        return {"field": self.field, self._op: sorted({normalize(t) for t in self.terms})}


class AnyOf(_Terms):
    _op = "any_of"
    _combine = any

    any_of: tuple[str, ...] = Field(min_length=1, max_length=MAX_TERMS)

    @field_validator("any_of")
    @classmethod
    def _terms(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return _clean_terms(v)


class AllOf(_Terms):
    _op = "all_of"
    _combine = all

    all_of: tuple[str, ...] = Field(min_length=1, max_length=MAX_TERMS)

    @field_validator("all_of")
    @classmethod
    def _terms(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return _clean_terms(v)


class Regex(_Node):
    field: FieldName = "all_text"
    regex: str = Field(min_length=1, max_length=MAX_REGEX_CHARS)

    @field_validator("regex")
    @classmethod
    def _compiles(cls, v: str) -> str:
        compile_regex(v)
        return v

    @cached_property
    def compiled(self) -> Any:
        return compile_regex(self.regex)

    def matches(self, fields: Mapping[str, str]) -> bool:
        return self.compiled.search(fields[self.field]) is not None

    def render(self) -> str:
        return f"{self.field} matches /{self.regex}/"

    def _canonical(self) -> Any:
        return {"field": self.field, "regex": self.regex}


class Not(_Node):
    not_: Condition = Field(alias="not")

    def matches(self, fields: Mapping[str, str]) -> bool:
        return not self.not_.matches(fields)

    def render(self) -> str:
        return f"NOT ({self.not_.render()})"

    def children(self) -> tuple[Condition, ...]:
        return (self.not_,)

    def _canonical(self) -> Any:
        return {"not": self.not_._canonical()}


class And(_Node):
    and_: tuple[Condition, ...] = Field(alias="and", min_length=1, max_length=MAX_TERMS)

    def matches(self, fields: Mapping[str, str]) -> bool:
        return all(c.matches(fields) for c in self.and_)

    def render(self) -> str:
        return " AND ".join(f"({c.render()})" for c in self.and_)

    def children(self) -> tuple[Condition, ...]:
        return self.and_

    def _canonical(self) -> Any:
        return {"and": sorted((c._canonical() for c in self.and_), key=json.dumps)}


class Or(_Node):
    or_: tuple[Condition, ...] = Field(alias="or", min_length=1, max_length=MAX_TERMS)

    def matches(self, fields: Mapping[str, str]) -> bool:
        return any(c.matches(fields) for c in self.or_)

    def render(self) -> str:
        return " OR ".join(f"({c.render()})" for c in self.or_)

    def children(self) -> tuple[Condition, ...]:
        return self.or_

    def _canonical(self) -> Any:
        return {"or": sorted((c._canonical() for c in self.or_), key=json.dumps)}


_KINDS = ("any_of", "all_of", "regex", "not", "and", "or")


def _kind(value: Any) -> str | None:
    """Which node a raw dict (or model) is: the one operator key it carries."""
    if isinstance(value, _Node):
        return {AnyOf: "any_of", AllOf: "all_of", Regex: "regex", Not: "not", And: "and", Or: "or"}[type(value)]
    if isinstance(value, dict):
        found = [k for k in _KINDS if k in value]
        return found[0] if len(found) == 1 else None  # None: pydantic reports "no/ambiguous operator"
    return None


Condition = Annotated[
    (
        Annotated[AnyOf, Tag("any_of")]
        | Annotated[AllOf, Tag("all_of")]
        | Annotated[Regex, Tag("regex")]
        | Annotated[Not, Tag("not")]
        | Annotated[And, Tag("and")]
        | Annotated[Or, Tag("or")]
    ),
    Discriminator(
        _kind,
        custom_error_type="condition_operator",
        custom_error_message=f"a condition needs exactly one operator key of {', '.join(_KINDS)}",
    ),
]

for _model in (Not, And, Or):
    _model.model_rebuild()


def depth(cond: Condition) -> int:
    return 1 + max((depth(c) for c in cond.children()), default=0)


def leaves(cond: Condition) -> list[AnyOf | AllOf | Regex]:
    """The term and regex nodes, left to right."""
    if isinstance(cond, AnyOf | AllOf | Regex):
        return [cond]
    return [leaf for c in cond.children() for leaf in leaves(c)]


def n_terms(cond: Condition) -> int:
    """Size of a condition for the search's cost term: one per term or regex."""
    return sum(len(x.terms) if isinstance(x, _Terms) else 1 for x in leaves(cond))



def matched_leaves(cond: Condition, fields: Mapping[str, str]) -> list[str]:
    """The term and regex nodes that hold on these normalised fields, in words: why a rule fired."""
    return [leaf.render() for leaf in leaves(cond) if leaf.matches(fields)]
