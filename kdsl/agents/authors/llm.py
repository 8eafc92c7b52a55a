"""The rule author: a language model reads an error report and proposes K rule edits as JSON.

Model output is untrusted data. Each proposed edit is validated, repaired once (trimmed terms, a dropped bad regex,
a refine of an unknown rule turned into an add...) or dropped, and every drop is counted by reason in
`Proposal.invalid`. Nothing the model writes is executed: it becomes a `Rule` of the closed condition language or
nothing.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from kdsl.agents.authors.prompt import Language, edit_schema, prompt_fields, render_prompt
from kdsl.errors import ModelError, RuleSyntaxError
from kdsl.models.base import Generation, Message, ModelBackend
from kdsl.rules.condition import MAX_REGEX_CHARS, MAX_TERM_CHARS, MAX_TERMS, compile_regex
from kdsl.rules.edits import RuleEdit
from kdsl.rules.normalize import normalize
from kdsl.rules.rule import Rule, RuleSet, parse_rule
from kdsl.search.proposer import ErrorReport, Proposal
from kdsl.tools.features import FIELDS

logger = logging.getLogger(__name__)

MAX_STATEMENT_CHARS = 200

# Field names small models write instead of the real ones.
_FIELD_ALIASES = {
    "user": "user_text", "text": "all_text", "all": "all_text", "dialogue": "all_text", "query": "user_text",
    "last_user": "last_user_text", "agent": "agent_text", "ocr": "image_text", "image": "image_text",
    "ocr_text": "image_text", "labels": "image_labels", "image_label": "image_labels",
}


class AuthorConfig(BaseModel):
    """How the author asks: how many edits, how long a reply, how random, in which language, how much it shows."""

    model_config = ConfigDict(frozen=True)

    k: int = Field(4, ge=1, le=32, description="Edits asked per call when the caller passes no k.")
    max_tokens: int = Field(768, ge=16, description="Reply budget in tokens; a cut-off reply keeps its whole edits.")
    temperature: float = Field(0.7, ge=0.0, le=2.0, description="Sampling temperature; 0 is greedy (deterministic).")
    language: Language = Field("zh", description="Language of the instructions: the dataset's ('zh' for MDSIRC).")
    max_examples: int = Field(6, ge=0, description="Uncovered examples shown, and as many misfired ones.")
    max_field_chars: int = Field(120, ge=10, description="Characters shown of each field of an example.")

    @field_validator("language", mode="before")
    @classmethod
    def _language(cls, v: Any) -> Any:
        if isinstance(v, str) and v.lower() in ("zh", "en"):
            return v.lower()
        raise ValueError(f"language must be 'zh' or 'en', got {v!r}")


class ParsedEdits(BaseModel):
    """What came out of one reply: the valid edits, drops by reason, repairs by kind."""

    model_config = ConfigDict(frozen=True)

    edits: tuple[RuleEdit, ...] = ()
    invalid: dict[str, int] = Field(default_factory=dict)
    repaired: dict[str, int] = Field(default_factory=dict)

    @property
    def proposed(self) -> int:
        """Edits the model wrote (kept or dropped), not counting whole-reply failures."""
        return len(self.edits) + sum(v for k, v in self.invalid.items() if k not in ("not_json", "truncated"))



class _Drop(Exception):  # noqa: N818 - control flow inside the parser, never leaves this module
    def __init__(self, reason: str):
        self.reason = reason


# --- reading a reply --------------------------------------------------------------------------------------------


def extract_items(text: str) -> tuple[list[Any], bool]:
    """The edit items of a reply, leniently: strict JSON first, else every complete JSON object found in it.

    Returns (items, complete): `complete` is False when the reply was not one clean JSON value (cut off,
    wrapped in prose or code fences) and items were recovered piecewise.
    """
    text = text.strip()
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        pass
    else:
        items = _items(value)
        if items is not None:
            return items, True
    items = []
    for value in _objects(text):
        inner = _items(value)
        if inner is not None and isinstance(value, dict) and "edits" in value:
            items.extend(inner)
        elif isinstance(value, dict):
            items.append(value)
    return items, False


def _items(value: Any) -> list[Any] | None:
    if isinstance(value, dict) and isinstance(value.get("edits"), list):
        return value["edits"]
    if isinstance(value, list):
        return value
    if isinstance(value, dict) and ("label" in value or "op" in value):
        return [value]
    return None


def _objects(text: str) -> Iterator[Any]:
    """Each outermost JSON object that decodes, left to right; an object cut off is searched inside."""
    decoder = json.JSONDecoder()
    i = text.find("{")
    while i >= 0:
        try:
            value, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            i = text.find("{", i + 1)
            continue
        yield value
        i = text.find("{", end)


# --- repairing and validating one edit --------------------------------------------------------------------------


def _terms(raw: Any, repairs: Counter[str], labels: Sequence[str] = ()) -> tuple[str, ...]:
    if raw is None:
        return ()
    if isinstance(raw, str):
        raw = [p for p in re.split(r"[,，、|;；]", raw)]
        repairs["terms_from_string"] += 1
    if not isinstance(raw, list):
        raise _Drop("bad_terms")
    out: list[str] = []
    for t in raw:
        if not isinstance(t, str | int | float) or isinstance(t, bool):
            repairs["term_dropped"] += 1
            continue
        term = " ".join(str(t).split()).strip(" \"'“”‘’`")
        if not any(c.isalnum() for c in normalize(term)) or len(term) > MAX_TERM_CHARS:  # "...", "#": no word
            repairs["term_dropped"] += 1
            continue
        if normalize(term) in {normalize(x) for x in labels}:  # a label's name, copied from the prompt
            repairs["term_is_label"] += 1
            continue
        if normalize(term) in {normalize(x) for x in out}:
            repairs["term_duplicate"] += 1
            continue
        out.append(term)
    if len(out) > MAX_TERMS:
        repairs["terms_capped"] += 1
        out = out[:MAX_TERMS]
    return tuple(out)


def _label(raw: Any, labels: Sequence[str], repairs: Counter[str]) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise _Drop("missing_label")
    if raw in labels:
        return raw
    key = normalize(raw.strip(" \"'“”`"))
    exact = [lab for lab in labels if normalize(lab) == key]
    near = exact or [lab for lab in labels if key and (key in normalize(lab) or normalize(lab) in key)]
    if len(near) == 1:
        repairs["label"] += 1
        return near[0]
    raise _Drop("unknown_label")


def _field(raw: Any, fields: Sequence[str], repairs: Counter[str]) -> str:
    if raw is None or raw == "":
        repairs["field_default"] += 1
        return "all_text"
    if not isinstance(raw, str):
        raise _Drop("unknown_field")
    key = raw.strip().lower().replace(" ", "_").replace("-", "_")
    name = key if key in FIELDS else _FIELD_ALIASES.get(key)
    if name is None or name not in fields:
        raise _Drop("unknown_field")
    if name != raw:
        repairs["field"] += 1
    return name


def _condition(item: dict[str, Any], field: str, labels: Sequence[str], repairs: Counter[str]) -> dict[str, Any]:
    """The flat item's condition in the rule language: any_of AND all_of AND regex AND NOT not_any_of."""
    positive: list[dict[str, Any]] = []
    if any_of := _terms(item.get("any_of"), repairs, labels):
        positive.append({"field": field, "any_of": list(any_of)})
    if all_of := _terms(item.get("all_of"), repairs, labels):
        positive.append({"field": field, "all_of": list(all_of)})
    regex, bad_regex = item.get("regex"), False
    if isinstance(regex, str) and regex.strip():
        regex = regex.strip()
        try:
            if len(regex) > MAX_REGEX_CHARS:
                raise ValueError("too long")
            compile_regex(regex)
        except ValueError:
            bad_regex = True
            repairs["regex_dropped"] += 1
        else:
            positive.append({"field": field, "regex": regex})
    if not positive:
        raise _Drop("bad_regex" if bad_regex else "empty_condition")
    if not_any := _terms(item.get("not_any_of"), repairs):
        positive.append({"not": {"field": field, "any_of": list(not_any)}})
    return positive[0] if len(positive) == 1 else {"and": positive}


def _edit(item: Any, report: ErrorReport, current: dict[str, Rule], fields: Sequence[str], author: str,
          repairs: Counter[str]) -> RuleEdit:
    if not isinstance(item, dict):
        raise _Drop("not_an_object")
    op = str(item.get("op") or "add").strip().lower()
    if op not in ("add", "refine", "drop"):
        raise _Drop("unknown_op")
    target = item.get("target")
    target = _target(target, current) if isinstance(target, str) and target.strip() else None
    if op == "drop":
        if target is None:
            raise _Drop("unknown_target")
        return RuleEdit(op="drop", target=target, rationale=_statement(item.get("statement")))
    if op == "refine" and target is None:
        repairs["refine_to_add"] += 1  # a refinement of nothing is a new rule
        op = "add"
    label = _label(item.get("label"), report.labels, repairs)
    when = _condition(item, _field(item.get("field"), fields, repairs), report.labels, repairs)
    statement = _statement(item.get("statement"))
    raw_rule = {"label": label, "task": report.task, "when": when, "statement": statement,
                "origin": {"author": author, "parent": target if op == "refine" else None}}
    try:
        rule = parse_rule(raw_rule, where="proposed rule")
    except RuleSyntaxError as e:
        logger.debug("dropped an edit: %s", e)
        raise _Drop("invalid_rule") from e
    return RuleEdit(op=op, rule=rule, target=target if op == "refine" else None, rationale=statement)


def _target(raw: str, current: dict[str, Rule]) -> str | None:
    raw = raw.strip()
    if raw in current:
        return raw
    hits = [rid for rid in current if rid.startswith(raw) or raw.startswith(rid)] if len(raw) >= 4 else []
    return hits[0] if len(hits) == 1 else None


def _statement(raw: Any) -> str:
    return " ".join(raw.split())[:MAX_STATEMENT_CHARS] if isinstance(raw, str) else ""


def parse_edits(
    text: str,
    report: ErrorReport,
    rules: RuleSet,
    k: int,
    *,
    author: str,
    fields: Sequence[str] = FIELDS,
    truncated: bool = False,
) -> ParsedEdits:
    """Turn a reply into at most `k` valid, distinct edits; count drops by reason and repairs by kind.

    Drop reasons: not_json, truncated (the reply was cut off; its whole edits are kept), not_an_object,
    unknown_op, unknown_target, missing_label, unknown_label, unknown_field, bad_terms, empty_condition,
    bad_regex, invalid_rule, duplicate (repeats an edit or a rule already in the set), no_change, surplus.
    """
    invalid: Counter[str] = Counter()
    repairs: Counter[str] = Counter()
    items, complete = extract_items(text)
    if not items:
        invalid["not_json"] += 1
        return ParsedEdits(invalid=dict(invalid))
    if truncated:
        invalid["truncated"] += 1  # the edit being written when the budget ran out is lost
    if not complete:
        repairs["lenient_json"] += 1
    current = {r.id: r for r in rules.rules if r.task == report.task}
    keys = {f"add||{r.task}|{r.label}|{r.when.key}" for r in current.values()}  # adding an existing rule again
    edits: list[RuleEdit] = []
    for item in items:
        try:
            edit = _edit(item, report, current, fields, author, repairs)
        except _Drop as d:
            invalid[d.reason] += 1
            continue
        if edit.op == "refine" and edit.rule is not None and edit.rule.when.key == current[edit.target].when.key \
                and edit.rule.label == current[edit.target].label:
            invalid["no_change"] += 1
            continue
        if edit.key in keys:
            invalid["duplicate"] += 1
            continue
        if len(edits) >= k:
            invalid["surplus"] += 1
            continue
        keys.add(edit.key)
        edits.append(edit)
    return ParsedEdits(edits=tuple(edits), invalid=dict(invalid), repaired=dict(repairs))


# --- the agent --------------------------------------------------------------------------------------------------


class RuleAuthor:
    """Proposes rule edits with a language model (an `EditProposer`).

    A backend that can constrain its output (llama.cpp) gets the reply's JSON schema, with the task's labels and
    the usable fields as enums; any other backend is asked for the same JSON in words and read leniently. Either
    way every edit is validated. After each call `last_parse_` holds the parse (edits, drops, repairs) and
    `last_prompt_` the messages sent.

    Example:
        author = RuleAuthor(load_backend("llama_cpp:qwen2.5-coder-0.5b-instruct", settings), AuthorConfig(k=8))
        proposal = author.propose(RuleSet(), report, k=8, seed=0)
    """

    def __init__(self, backend: ModelBackend, config: AuthorConfig | None = None, *, name: str | None = None):
        self.backend = backend
        self.config = config or AuthorConfig()
        self.model = backend.info.pack or backend.info.model
        self.name = name or f"author:{self.model}"
        self.last_parse_: ParsedEdits | None = None
        self.last_prompt_: list[Message] | None = None

    def messages(self, rules: RuleSet, report: ErrorReport, k: int) -> list[Message]:
        system, user = render_prompt(report, rules, k, language=self.config.language,
                                     max_examples=self.config.max_examples,
                                     max_field_chars=self.config.max_field_chars,
                                     show_format=not self.backend.supports_schema)
        return [Message(role="system", content=system), Message(role="user", content=user)]

    def propose(self, rules: RuleSet, report: ErrorReport, k: int | None = None, *, seed: int = 0) -> Proposal:
        k = k or self.config.k
        if not report.labels:
            raise ValueError(f"the error report of task {report.task!r} names no labels")
        messages = self.messages(rules, report, k)
        fields = prompt_fields(report)
        targets = [r.id for r in rules.rules if r.task == report.task]
        schema = edit_schema(report.labels, fields, targets, k)
        generation = self._generate(messages, schema, seed)
        parsed = parse_edits(generation.text, report, rules, k, author=self.model, fields=fields,
                             truncated=generation.finish_reason == "length")
        self.last_prompt_, self.last_parse_ = messages, parsed
        if parsed.invalid:
            logger.info("%s: %d edits kept, dropped %s", self.name, len(parsed.edits), parsed.invalid)
        return Proposal(edits=parsed.edits, prompt_tokens=generation.prompt_tokens,
                        completion_tokens=generation.completion_tokens, seconds=generation.seconds,
                        invalid=parsed.invalid)

    def _generate(self, messages: list[Message], schema: dict[str, Any], seed: int) -> Generation:
        cfg = self.config
        if self.backend.supports_schema:
            try:
                return self.backend.generate(messages, schema=schema, max_tokens=cfg.max_tokens,
                                             temperature=cfg.temperature, seed=seed)
            except ModelError as e:  # a backend that says it constrains but cannot: ask in words instead
                logger.warning("%s cannot constrain its output (%s); reading it leniently", self.name, e)
        else:
            logger.debug("%s has no schema support; reading its output leniently", self.name)
        return self.backend.generate(messages, max_tokens=cfg.max_tokens, temperature=cfg.temperature, seed=seed)
