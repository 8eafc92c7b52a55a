"""Rules as data: a label, a task, a condition, the rule in plain words, where it came from, how it did."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kdsl._internal._atomic import write_text_atomic
from kdsl.errors import RuleSyntaxError
from kdsl.rules.analysis import RuleStats
from kdsl.rules.condition import MAX_DEPTH, Condition, depth, n_terms

RuleStatus = Literal["candidate", "accepted", "retired"]


class Provenance(BaseModel):
    """Who wrote the rule and during what: a person, or a model in a session at a search node."""

    model_config = ConfigDict(frozen=True)

    author: str = Field("human", description="'human' or the model that wrote it.")
    session: str | None = None
    node: str | None = Field(None, description="Search node that proposed it.")
    parent: str | None = Field(None, description="Id of the rule this one refines.")


class Rule(BaseModel):
    """One interpretable rule: when `when` holds on a sample of `task`, predict `label`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field("", description="Stable id; derived from task, label and condition when left empty.")
    label: str = Field(min_length=1)
    task: str = Field(min_length=1)
    when: Condition
    statement: str = Field("", description="The rule in plain words.")
    origin: Provenance = Field(default_factory=Provenance)
    status: RuleStatus = "candidate"
    version: int = Field(1, ge=1)
    stats: RuleStats | None = Field(None, description="Statistics on the split it was last checked on.")

    @model_validator(mode="after")
    def _derive(self) -> Rule:
        if depth(self.when) > MAX_DEPTH:
            raise ValueError(f"the condition nests deeper than {MAX_DEPTH} levels")
        if not self.id:
            digest = hashlib.sha256(f"{self.task}\t{self.label}\t{self.when.key}".encode()).hexdigest()[:10]
            object.__setattr__(self, "id", f"r-{digest}")
        return self

    @property
    def confidence(self) -> float:
        """What the rule set ranks firing rules by: the Wilson lower bound of precision, 0 without stats."""
        return self.stats.precision_lower if self.stats else 0.0


# What one rules file may hold: every term is matched against every sample, so the file's size bounds the work.
MAX_FILE_RULES = 5_000
MAX_FILE_TERMS = 20_000


class RuleSet(BaseModel):
    """An ordered collection of rules; order breaks ties between equally confident rules."""

    model_config = ConfigDict(frozen=True)

    rules: tuple[Rule, ...] = ()

    @model_validator(mode="after")
    def _unique_ids(self) -> RuleSet:
        seen: set[str] = set()
        for r in self.rules:
            if r.id in seen:
                raise ValueError(f"rule id {r.id!r} appears twice")
            seen.add(r.id)
        return self

    def __len__(self) -> int:
        return len(self.rules)

    def __iter__(self):  # type: ignore[override]  # iterate rules, not pydantic fields
        return iter(self.rules)

    def for_task(self, task: str) -> RuleSet:
        return RuleSet(rules=tuple(r for r in self.rules if r.task == task))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        body = {"rules": [r.model_dump(mode="json", by_alias=True, exclude_none=True) for r in self.rules]}
        return write_text_atomic(path, json.dumps(body, ensure_ascii=False, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> RuleSet:
        """Read a rules file: `{"rules": [...]}` or a bare list. Errors name the file, the rule and the field."""
        path = Path(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise RuleSyntaxError(f"{path}: no such rules file") from e
        except IsADirectoryError as e:
            raise RuleSyntaxError(f"{path}: is a folder, not a rules file") from e
        except UnicodeDecodeError as e:
            raise RuleSyntaxError(f"{path}: not UTF-8 text (byte {e.start}); save the rules file as UTF-8") from e
        except json.JSONDecodeError as e:
            raise RuleSyntaxError(f"{path}: not valid JSON ({e})") from e
        except RecursionError as e:
            raise RuleSyntaxError(f"{path}: nested too deeply to be a rules file (a condition may nest "
                                  f"{MAX_DEPTH} levels)") from e
        items = raw.get("rules") if isinstance(raw, dict) else raw
        if not isinstance(items, list):
            raise RuleSyntaxError(f"{path}: expected a list of rules or {{\"rules\": [...]}}")
        if len(items) > MAX_FILE_RULES:
            raise RuleSyntaxError(f"{path}: {len(items)} rules; a rules file holds at most {MAX_FILE_RULES}")
        rules = tuple(parse_rule(item, where=f"{path}: rule #{i}") for i, item in enumerate(items))
        terms = sum(n_terms(r.when) for r in rules)
        if terms > MAX_FILE_TERMS:
            raise RuleSyntaxError(f"{path}: {terms} terms in all; a rules file holds at most {MAX_FILE_TERMS} (each "
                                  "term is matched against every sample)")
        seen: dict[str, int] = {}
        for i, r in enumerate(rules):
            if r.id in seen:
                raise RuleSyntaxError(f"{path}: rule #{i} ({r.id}): the id of rule #{seen[r.id]} again; rule ids "
                                      "must be unique")
            seen[r.id] = i
        return cls(rules=rules)


def parse_rule(raw: object, *, where: str = "rule") -> Rule:
    """Validate one rule from untrusted JSON; RuleSyntaxError says where and what is wrong."""
    try:
        return Rule.model_validate(raw)
    except ValidationError as e:
        rid = raw.get("id") if isinstance(raw, dict) else None
        problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'rule'}: {err['msg']}" for err in e.errors()[:3])
        raise RuleSyntaxError(f"{where}{f' ({rid})' if rid else ''}: {problems}") from e


def atoms(rule: Rule) -> list[Rule]:
    """The rule split into the smallest rules it is made of: one per term of an `any_of` condition (each term on
    its own says the label), the rule itself otherwise. Searches on different samples rarely agree on a whole term
    list, but they do on its terms, so terms are what cross-fitted verification counts."""
    from kdsl.rules.condition import AnyOf

    if not isinstance(rule.when, AnyOf):
        # A content id: the same condition for the same label is one atom whichever search wrote it.
        return [Rule.model_validate({**rule.model_dump(mode="json", by_alias=True), "id": "", "stats": None})]
    field = rule.when.field
    return [Rule(label=rule.label, task=rule.task, when=AnyOf(field=field, any_of=(term,)),
                 statement=f"'{term}' in {field} means {rule.label}",
                 origin=rule.origin.model_copy(update={"parent": rule.id}))
            for term in dict.fromkeys(rule.when.any_of)]
