"""What a discovery session does: its config, saved in the session folder's config.json."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ReviewFn = Callable[[dict[str, Any]], list[str]]  # the interrupt's payload -> the rule ids kept


class SessionConfig(BaseModel):
    """What a discovery session does. Saved in the session folder's config.json."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data: Path = Field(description="Dataset path (any format `kdsl data` reads).")
    task: str | None = Field(None, min_length=1, description="Task whose rules are discovered, e.g. "
                             "dialogue_intent; None: every task of the data, one child session per task.")
    author: str = Field("contrast", description="'backend:model' (e.g. llama_cpp:qwen2.5-coder-1.5b-instruct), "
                        "'contrast' (model-free: label-specific substrings of the search split), 'ngram' "
                        "(model-free: random substrings, a floor) or 'none' (no search: the candidates are the "
                        "mined terms and the term author's).")
    term_author: str | None = Field(None, description="'backend:model' (e.g. llama_cpp:qwen2.5-coder-1.5b-instruct) "
                                    "asked once per session for each label's terms from its name alone: synonyms, "
                                    "paraphrases, page words the samples may lack. They join the mined candidates; "
                                    "the verifier keeps those the data bears out. None: no model is asked.")
    strategy: Literal["mcts", "greedy", "random"] = Field("mcts", description="Search strategy.")
    iterations: int = Field(1000, ge=1, description="Search iterations, shared out over the folds (the model-free "
                            "authors run about 200 a second).")
    budget_seconds: float | None = Field(None, gt=0, description="Wall-clock budget of the authors: the term "
                                         "author's calls (once per session) and the search, shared out over the "
                                         "folds.")
    mined: bool = Field(True, description="Each label's mined terms and the terms of its name join the candidates "
                        "(False: only what the authors propose, to measure an author alone).")
    budget_tokens: int | None = Field(None, ge=1, description="Author token budget of the search.")
    k: int = Field(4, ge=1, le=32, description="Edits asked of the author per call.")
    seed: int = Field(0, ge=0, description="Seeds the split and the search.")
    review: bool = Field(False, description="Pause after verification for a person to keep or drop each rule.")
    images: bool = Field(True, description="OCR and visual labels as features (False: dialogue text only).")
    language: str = Field("zh", description="Language of the author's instructions ('zh' for MDSIRC).")
    author_max_tokens: int = Field(512, ge=16, description="Reply budget of one author call.")
    folds: int = Field(5, ge=3, le=20, description="Cross-fitting folds of the search split (3 at least: the "
                       "nested estimate holds two out at once): the decider's "
                       "out-of-fold predictions, one rule search per fold, verification pooled over the folds.")
    test: float = Field(0.2, gt=0, lt=1, description="Share of the data sealed for the final evaluation.")
    k_shot: int | None = Field(None, ge=1, description="Few-shot: keep at most k search samples per label (the "
                               "rest of the search share is left out; the test share stays whole).")
    split: Path | None = Field(None, description="A split file (`kdsl data split`, or your own train / test ids) "
                               "instead of drawing one: its search and verify parts are searched, its test is sealed.")
    test_data: Path | None = Field(None, description="A separate labeled test file (same format and tasks as "
                                   "`data`): sealed, read once at the end; all of `data` is searched (with "
                                   "`k_shot`: up to k per label).")
    oos_label: str | None = Field(None, min_length=1, description="The out-of-scope label, scored apart (in-scope "
                                  "accuracy, out-of-scope recall); default: a label named oos or out_of_scope.")
    min_support: int = Field(3, ge=1, description="Verify: a rule must fire on at least this many samples.")
    min_precision_lower: float = Field(0.3, ge=0, le=1, description="Verify: least Wilson lower bound of precision "
                                       "(0.3: a rule right on 3 of 4 held-out samples counts).")
    min_precision: float = Field(0.75, ge=0, le=1, description="Verify: least precision of a rule (pooled counts). "
                                 "The loosest bars: with a target precision the verifier tightens them until the "
                                 "accepted set's estimate reaches it.")
    target_precision: float | None = Field(
        0.85, ge=0, le=1, description="Verify: tighten the bars above step by step (precision 0.8, 0.85, 0.9, 0.95; "
        "lower bound 0.4, 0.5, 0.6; support 4, 5, 6) until the accepted set's nested cross-fitted precision reaches "
        "this, so the rules cover as much as that precision allows; None: the bars as given.")
    gain_check: bool = Field(True, description="Let the rules change the decider's decisions only when, on the "
                             "cross-fitted training data, the two together beat the decider alone (paired 95% CI "
                             "above 0); otherwise the rules explain and the decider decides. False: always combine.")
    memory: Path | None = Field(None, description="Rule memory folder (default: KDSL_HOME/memory).")
    checkpointer: str | None = Field(None, description="A PostgreSQL URL (postgresql://USER@HOST:PORT/DB) for the "
                                     "session's checkpoints, shared by sessions on many machines; kept without its "
                                     "password (libpq reads PGPASSWORD or ~/.pgpass). None: checkpoints.sqlite in "
                                     "the session folder.")
    decider: Literal["features", "majority"] = Field(
        "features", description="What the rules decide together with: 'features' (the CPU decider, fitted on the "
        "search split; the search rewards rules by how they fix its out-of-fold predictions there, the sealed test "
        "compares rules + decider with the decider alone) or 'majority' (the search split's majority label).")

    text_column: str | None = Field(None, description="A CSV's text column (default: recognised by name).")
    label_column: str | None = Field(None, description="A CSV's label column (default: recognised by name).")

    @property
    def columns(self) -> dict[str, str | None]:
        """The column names to pass to `load_dataset`."""
        return {"text_column": self.text_column, "label_column": self.label_column}

    @model_validator(mode="after")
    def _one_test(self) -> SessionConfig:
        if self.split is not None and self.test_data is not None:
            raise ValueError("give a split file or a test file, not both (a split file names its own test ids)")
        if self.author == "none" and not self.mined and self.term_author is None:
            raise ValueError("no candidates: author 'none' searches nothing, and without mined terms or a term "
                             "author nothing is left to verify")
        return self

    @field_validator("data", "split", "test_data")
    @classmethod
    def _absolute(cls, v: Path | None) -> Path | None:
        # config.json must name the same files when the session is resumed or evaluated from another folder.
        return None if v is None else v.expanduser().resolve()

    @field_validator("checkpointer")
    @classmethod
    def _checkpointer(cls, v: str | None) -> str | None:
        from kdsl.graph.checkpointer import check_checkpointer_url, redact

        return None if v is None else redact(check_checkpointer_url(v))

    @field_validator("author")
    @classmethod
    def _author(cls, v: str) -> str:
        from kdsl.agents.authors import check_author_spec

        return check_author_spec(v)

    @field_validator("term_author")
    @classmethod
    def _term_author(cls, v: str | None) -> str | None:
        from kdsl.agents.authors import check_author_spec

        if v is not None and ":" not in v:
            raise ValueError(f"term_author {v!r}: name a language model as backend:model, e.g. "
                             "llama_cpp:qwen2.5-coder-1.5b-instruct")
        return None if v is None else check_author_spec(v)
