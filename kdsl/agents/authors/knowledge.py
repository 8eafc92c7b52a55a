"""Terms from a language model's knowledge of each label: the synonyms, paraphrases and page words that the few
labeled samples may not show.

The model reads a label's name (and, when given, a few of its samples) and lists up to 10 terms, as JSON
constrained by a schema: about 40 tokens a reply, so a call takes seconds on a CPU. Asked from the names alone,
the terms come from no sample: like the terms of the labels' own names (`label_name_rules`) they are the same
candidates in every fold of a session, and the verifier judges them on data without any sample's evidence having
chosen them. The replies are untrusted input: each term is normalised, and terms too short, too long, made of
digits or punctuation only, or repeated are dropped and counted by reason.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from kdsl.models.base import Message

MAX_TERMS = 10
MAX_CHARS = 24
SCHEMA = {"type": "object", "additionalProperties": False, "required": ["terms"], "properties": {"terms": {
    "type": "array", "minItems": 3, "maxItems": MAX_TERMS,
    "items": {"type": "string", "minLength": 2, "maxLength": MAX_CHARS}}}}
# Per language: the system prompt asking from the name alone, the one with samples shown, the user's message and
# its samples' line. Chinese for Chinese data: the model answers in the language it is asked in, and the terms
# must be in the data's language to ever match.
PROMPTS = {
    "zh": ("你是电商客服数据的标注专家。给定一个类别的名字，列出属于这个类别的样本里常出现的词语："
           "同义词、近义说法、相关词、页面上的标题和按钮名。每个词 2 到 6 个字。只输出 JSON。",
           "你是电商客服数据的标注专家。给定一个类别、它的名字和几个样例，列出属于这个类别的样本里常出现的词语："
           "同义词、近义说法、相关词、页面上的标题和按钮名，包括样例里没有的。每个词 2 到 6 个字。只输出 JSON。",
           "类别：{label}\n{examples}请列出 10 个词语。",
           "样例：\n{shown}\n"),
    "en": ("You label customer messages. Given an intent's name, list words and short phrases customers use when "
           "they mean this intent: synonyms, paraphrases, related words. Each 1 to 3 words. Output JSON only.",
           "You label customer messages. Given an intent, its name and a few example messages, list words and short "
           "phrases customers use when they mean this intent: synonyms, paraphrases, related words, including ones "
           "not in the examples. Each 1 to 3 words. Output JSON only.",
           "Intent: {label}\n{examples}List 10 terms.",
           "Examples:\n{shown}\n"),
}


class KnowledgeTerms(BaseModel):
    """What the model listed for each label, kept after checks, and what the asking cost."""

    model_config = ConfigDict(frozen=True)

    model: str
    terms: dict[str, tuple[str, ...]] = Field(description="label -> terms, normalised, in the model's order.")
    calls: int = 0
    seconds: float = 0.0
    call_seconds: tuple[float, ...] = Field((), description="Each call's seconds, in label order.")
    prompt_tokens: int = 0
    completion_tokens: int = 0
    dropped: dict[str, int] = Field(default_factory=dict, description="reason -> terms (or replies) dropped.")


def data_language(texts: Sequence[str]) -> str:
    """'zh' when most letters of `texts` are CJK, else 'en': the language to ask the model in."""
    cjk = latin = 0
    for text in texts:
        for c in text:
            if "\u4e00" <= c <= "\u9fff":
                cjk += 1
            elif c.isalpha():
                latin += 1
    return "zh" if cjk > latin else "en"


def clean_term(raw: Any) -> tuple[str | None, str]:
    """A term as rules match it, or (None, why it was dropped)."""
    from kdsl.rules.normalize import normalize

    if not isinstance(raw, str):
        return None, "not text"
    term = " ".join(normalize(raw.replace("_", " ")).split())  # label-style snake_case is words to the data
    if len(term) < 2:
        return None, "too short"
    if len(term) > MAX_CHARS:
        return None, "too long"
    if not any(c.isalpha() for c in term):
        return None, "digits or punctuation only"
    return term, ""


def ask_terms(backend: Any, labels: Sequence[str], *, language: str = "zh", model: str = "",
              examples: Mapping[str, Sequence[str]] | None = None, max_tokens: int = 120) -> KnowledgeTerms:
    """Ask `backend` (a kdsl model backend) for each label's terms, one short schema-constrained call per label.
    `examples` (label -> texts, 100 characters of each shown) adds samples to the prompt; without them the
    terms come from the model's knowledge and the label's name alone."""
    by_name, with_samples, user, sample_line = PROMPTS["zh" if language.startswith("zh") else "en"]
    out: dict[str, tuple[str, ...]] = {}
    dropped: Counter[str] = Counter()
    calls = prompt_tokens = completion_tokens = 0
    seconds = 0.0
    each: list[float] = []
    for label in labels:
        shown = [x[:100] for x in (examples or {}).get(label, ())]
        lines = sample_line.format(shown="\n".join(f"- {x}" for x in shown)) if shown else ""
        start = time.perf_counter()
        system = with_samples if shown else by_name
        reply = backend.generate([Message(role="system", content=system),
                                  Message(role="user", content=user.format(label=label, examples=lines))],
                                 schema=SCHEMA, max_tokens=max_tokens, temperature=0.0)
        took = time.perf_counter() - start
        seconds += took
        each.append(round(took, 3))
        calls += 1
        prompt_tokens += reply.prompt_tokens
        completion_tokens += reply.completion_tokens
        try:
            raw = json.loads(reply.text)["terms"]
        except (json.JSONDecodeError, KeyError, TypeError):
            dropped["reply not JSON of the schema"] += 1  # e.g. cut off by max_tokens
            continue
        if not isinstance(raw, list):
            dropped["reply not JSON of the schema"] += 1
            continue
        kept: dict[str, None] = {}
        for item in raw[:MAX_TERMS]:
            term, why = clean_term(item)
            if term is None:
                dropped[why] += 1
            elif term in kept:
                dropped["repeated"] += 1
            else:
                kept[term] = None
        out[label] = tuple(kept)
    return KnowledgeTerms(model=model, terms=out, calls=calls, seconds=round(seconds, 3), call_seconds=tuple(each),
                          prompt_tokens=prompt_tokens,
                          completion_tokens=completion_tokens, dropped=dict(dropped))


def asking_key(model: str, labels: Sequence[str], language: str, max_tokens: int = 120) -> str:
    """What the terms of `ask_terms` (from the names alone, at temperature 0) depend on: the same key, the same
    replies, so they can be cached across sessions."""
    from kdsl._internal.hashing import digest

    lang = "zh" if language.startswith("zh") else "en"
    return digest({"model": model, "labels": list(labels), "language": lang, "prompts": PROMPTS[lang],
                   "schema": SCHEMA, "max_tokens": max_tokens, "max_terms": MAX_TERMS, "max_chars": MAX_CHARS})


def knowledge_rules(found: KnowledgeTerms, task: str, fields: tuple[str, ...]) -> list:
    """One-term rules from the model's terms, one per term and field, for the verifier to judge on data."""
    from kdsl.rules.condition import AnyOf
    from kdsl.rules.rule import Provenance, Rule

    return [Rule(label=label, task=task, when=AnyOf(field=field, any_of=(term,)),  # type: ignore[arg-type]
                 statement=f"'{term}' in {field} means {label} (the model's knowledge of the label)",
                 origin=Provenance(author=f"knowledge:{found.model}" if found.model else "knowledge"))
            for label, terms in found.terms.items() for term in terms for field in fields]
