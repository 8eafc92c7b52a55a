"""What the memory's writes and queries return."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from kdsl.rules.rule import Rule

WriteAction = Literal["inserted", "merged", "linked", "updated"]


class WriteResult(BaseModel):
    """The outcome of one write.

    - inserted: the rule is stored as `rule_id`.
    - merged: an equivalent rule (same task, label and condition) was already stored as `rule_id`; the incoming
      rule's statistics were pooled into it (see `kdsl.memory.evidence`) and nothing new was stored.
    - linked: the rule is stored as `rule_id`, and its statement nearly duplicates `linked_to`'s; the worse of the
      two records `duplicate_of` = the better one (`better_id`).
    - updated: `rule_id` is a new version that `replaces` the now retired old one.
    """

    model_config = ConfigDict(frozen=True)

    action: WriteAction
    rule_id: str = Field(description="Id of the stored rule the write ended in.")
    rule: Rule = Field(description="That rule as stored now.")
    incoming_id: str = Field(description="Id the written rule carried.")
    linked_to: str | None = Field(None, description="linked: the near-duplicate rule.")
    better_id: str | None = Field(None, description="linked: the better of the two (higher confidence, then support).")
    similarity: float | None = Field(None, description="linked: cosine similarity of the two statements.")
    replaces: str | None = Field(None, description="updated: the retired previous version.")


class SearchHit(BaseModel):
    """A rule found by semantic search; `score` is the cosine similarity of query and document (higher is closer)."""

    model_config = ConfigDict(frozen=True)

    rule: Rule
    score: float
    document: str


class MemoryRecord(BaseModel):
    """A stored rule with what the memory knows about it beyond the rule itself."""

    model_config = ConfigDict(frozen=True)

    rule: Rule
    document: str = Field(description="The embedded text: statement, newline, condition in words.")
    sessions: tuple[str, ...] = Field((), description="Sessions whose measurements are pooled in the statistics.")
    duplicate_of: str | None = Field(None, description="A better rule whose statement this one nearly repeats.")
    similarity: float | None = Field(None, description="Statement similarity to `duplicate_of`.")
    superseded_by: str | None = Field(None, description="The version that replaced this retired one.")
    created: float = Field(description="Unix time of the first write.")
    updated: float = Field(description="Unix time of the last write.")
