"""Edits of a rule set: what the author proposes and the search applies. Edits are data, like rules."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from kdsl.rules.rule import Rule, RuleSet

EditOp = Literal["add", "refine", "drop"]


class RuleEdit(BaseModel):
    """One change to a rule set.

    - add: put `rule` into the set.
    - refine: replace the rule `target` with `rule` (its `origin.parent` should be `target`).
    - drop: remove the rule `target`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    op: EditOp
    rule: Rule | None = Field(None, description="The new rule (add, refine).")
    target: str | None = Field(None, description="Id of the rule in the current set (refine, drop).")
    rationale: str = Field("", description="Why, in the author's words.")

    @model_validator(mode="after")
    def _complete(self) -> RuleEdit:
        if self.op in ("add", "refine") and self.rule is None:
            raise ValueError(f"a {self.op} edit needs a rule")
        if self.op in ("refine", "drop") and not self.target:
            raise ValueError(f"a {self.op} edit needs the target rule id")
        return self

    @property
    def key(self) -> str:
        """Identifies the edit's effect: two edits with one key lead to the same rule set."""
        new = f"{self.rule.task}|{self.rule.label}|{self.rule.when.key}" if self.rule else ""
        return f"{self.op}|{self.target or ''}|{new}"


def apply_edit(rules: RuleSet, edit: RuleEdit) -> RuleSet:
    """The rule set after the edit. An edit that changes nothing (duplicate add, unknown target) returns `rules`."""
    ids = [r.id for r in rules.rules]
    if edit.op == "add":
        assert edit.rule is not None
        if edit.rule.id in ids:
            return rules
        return RuleSet(rules=rules.rules + (edit.rule,))
    if edit.target not in ids:
        return rules
    if edit.op == "drop":
        return RuleSet(rules=tuple(r for r in rules.rules if r.id != edit.target))
    assert edit.rule is not None
    if edit.rule.id in ids and edit.rule.id != edit.target:
        return RuleSet(rules=tuple(r for r in rules.rules if r.id != edit.target))  # refined into an existing rule
    return RuleSet(rules=tuple(edit.rule if r.id == edit.target else r for r in rules.rules))
