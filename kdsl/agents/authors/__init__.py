"""Rule authors: what proposes edits to a rule set during the search (the `EditProposer` protocol of kdsl.search),
and the term mining that gives a session its model-free candidates.

Authors are registered by name, like model backends: `contrast` (the default: words, phrases and Chinese n-grams
that single out a label among the current errors) and `ngram` (random substrings, a floor) need no model; any
other spec, `backend:model`, is the LLM author over that backend (`kdsl.models.load_backend`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kdsl.agents.authors.contrast import ContrastProposer
from kdsl.agents.authors.llm import AuthorConfig, RuleAuthor, parse_edits
from kdsl.agents.authors.ngram import NgramProposer
from kdsl.errors import ConfigError
from kdsl.rules.engine import RuleEngine
from kdsl.search.proposer import EditProposer


@dataclass(frozen=True)
class AuthorContext:
    """What an author may be built from: the search samples (engine and gold labels), the fields rules read, and
    for an LLM author the settings (model packs) and how to ask."""

    engine: RuleEngine
    gold: Sequence[str]
    fields: Sequence[str]
    settings: Any = None
    config: AuthorConfig = AuthorConfig()


AuthorFactory = Callable[[AuthorContext], EditProposer]

_AUTHORS: dict[str, AuthorFactory] = {
    "contrast": lambda c: ContrastProposer(c.engine, c.gold, fields=c.fields),
    "ngram": lambda c: NgramProposer(fields=c.fields),
}


def register_author(name: str, factory: AuthorFactory) -> None:
    """Make `name` an author spec (`kdsl discover --author NAME`). Names hold no ':' (that marks an LLM spec)."""
    if not name or ":" in name:
        raise ValueError(f"an author's name has no ':' and is not empty, got {name!r}")
    _AUTHORS[name] = factory


def model_free_authors() -> tuple[str, ...]:
    """The registered authors that need no model."""
    return tuple(_AUTHORS)


# The search author that runs no search: a session's candidates are then its mined terms and the term author's.
NO_AUTHOR = "none"


def check_author_spec(spec: str) -> str:
    """`spec` if it names an author (a registered name, `none` or `backend:model`), else a `ConfigError`."""
    if spec not in _AUTHORS and spec != NO_AUTHOR and ":" not in spec:
        raise ConfigError(f"author must be {' or '.join(map(repr, [*_AUTHORS, NO_AUTHOR]))} or 'backend:model', "
                          f"got {spec!r}")
    return spec


def make_author(spec: str, context: AuthorContext) -> EditProposer:
    """The author `spec` names, built for these samples: a registered one, or the LLM author over `backend:model`
    (llama.cpp packs get a 4096-token context: the error report and a few edits fit)."""
    if spec in _AUTHORS:
        return _AUTHORS[spec](context)
    if spec == NO_AUTHOR:
        raise ConfigError("author 'none' runs no search, so it proposes nothing: ask for a real author here")
    check_author_spec(spec)
    from kdsl.models import load_backend

    options = {"n_ctx": 4096} if spec.startswith("llama_cpp:") else {}
    return RuleAuthor(load_backend(spec, context.settings, **options), context.config)


__all__ = [
    "NO_AUTHOR", "AuthorConfig", "AuthorContext", "AuthorFactory", "ContrastProposer", "NgramProposer",
    "RuleAuthor",
    "check_author_spec", "make_author", "model_free_authors", "parse_edits", "register_author",
]
