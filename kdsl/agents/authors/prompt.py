"""What the rule author shows a model (the prompt, in the dataset's language) and the JSON shape it asks back.

The reply shape is flat on purpose: small models fill `{"op", "label", "field", "any_of", ...}` far more reliably
than the nested condition language, which `kdsl.agents.authors.llm` builds from it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

from kdsl.rules.rule import RuleSet
from kdsl.search.proposer import ErrorReport, ExampleView
from kdsl.tools.features import FIELDS

Language = Literal["zh", "en"]

# Bounds the grammar enforces on constrained backends (and the parser re-checks everywhere).
SCHEMA_TERM_CHARS = 16
SCHEMA_TERMS = 6
SCHEMA_STATEMENT_CHARS = 60
SCHEMA_REGEX_CHARS = 80

_TEXT: dict[str, dict[str, str]] = {
    "zh": {
        "system": "你是规则编写助手。你为分类任务编写可解释的关键词规则："
                  "当某个字段包含某些关键词时，预测某个标签。只输出 JSON。",
        "task": "任务：{task}",
        "score": "当前加权 F1：{f1:.2f}",
        "labels": "标签：",
        "fields": "字段：user_text=用户的话，last_user_text=用户最后一句，agent_text=客服的话，"
                  "image_text=图片中的文字，image_title=截图顶部标题栏的文字，image_bottom=截图底部按钮栏的文字，"
                  "image_labels=图片的视觉类别，all_text=全部文字",
        "rules": "当前规则（id | 标签 | 条件 | 命中数 | 精确率）：",
        "no_rules": "当前规则：无",
        "confusions": "主要混淆（真实 → 预测：次数）：",
        "uncovered": "没有规则命中且预测错误的样本：",
        "misfired": "被规则错误命中的样本：",
        "gold": "真实标签",
        "wrong": "规则 {rule} 预测为 {predicted}",
        "ask": "请给出 {k} 条修改，每条针对一个标签。op=add 新增规则"
               "{ops}。any_of 是关键词列表，字段包含其中任一词即命中；"
               "关键词必须是上面样本原文中出现的短词（2 到 6 个字），"
               "能把该标签和其他标签区分开，不要照抄标签名。"
               "not_any_of（可选）是排除词。statement 用一句话说明规则。",
        "ops": "；op=refine 用新条件替换 target 规则；op=drop 删除 target 规则",
        "focus": "优先针对这些标签，每条修改用不同的标签：",
        "format": "输出格式：",
        "label_slot": "<标签>", "statement_slot": "<一句话>", "term_slot": "<关键词>",
    },
    "en": {
        "system": "You write interpretable keyword rules for a classification task: when a field contains some "
                  "keywords, predict a label. Output JSON only.",
        "task": "Task: {task}",
        "score": "Current weighted F1: {f1:.2f}",
        "labels": "Labels: ",
        "fields": "Fields: user_text=what the user said, last_user_text=the user's last turn, agent_text=what the "
                  "agent said, image_text=text in the images, image_title=text in a screenshot's title band, "
                  "image_bottom=text in its bottom bar, image_labels=visual classes of the images, "
                  "all_text=everything",
        "rules": "Current rules (id | label | condition | support | precision):",
        "no_rules": "Current rules: none",
        "confusions": "Worst confusions (gold -> predicted: count):",
        "uncovered": "Samples no rule covers, predicted wrongly:",
        "misfired": "Samples a rule labels wrongly:",
        "gold": "gold",
        "wrong": "rule {rule} says {predicted}",
        "ask": "Give {k} edits, each for one label. op=add adds a rule{ops}. any_of lists keywords: the rule fires "
               "when the field contains any of them; keywords must be short words copied from the samples above "
               "that tell the label apart from the others, not the label's name. not_any_of (optional) lists words "
               "that block the rule. statement says the rule in one sentence.",
        "ops": "; op=refine replaces the rule `target` with a new condition; op=drop removes the rule `target`",
        "focus": "Start with these labels, a different label for each edit: ",
        "format": "Output format: ",
        "label_slot": "<label>", "statement_slot": "<one sentence>", "term_slot": "<keyword>",
    },
}


def edit_schema(labels: Sequence[str], fields: Sequence[str], targets: Sequence[str], k: int) -> dict[str, Any]:
    """The JSON schema of a reply: exactly `k` flat edits. Only `add` exists while there is no rule to target."""
    props: dict[str, Any] = {"op": {"enum": ["add", "refine", "drop"] if targets else ["add"]}}
    if targets:
        props["target"] = {"enum": [*targets, ""]}
    term = {"type": "string", "minLength": 1, "maxLength": SCHEMA_TERM_CHARS}
    terms = {"type": "array", "items": term, "minItems": 1, "maxItems": SCHEMA_TERMS}
    props |= {
        "label": {"enum": list(labels)},
        "statement": {"type": "string", "maxLength": SCHEMA_STATEMENT_CHARS},
        "field": {"enum": list(fields)},
        "any_of": terms,
        "all_of": terms,
        "regex": {"type": "string", "minLength": 1, "maxLength": SCHEMA_REGEX_CHARS},
        "not_any_of": terms,
    }
    required = ["op", *(["target"] if targets else []), "label", "statement", "field", "any_of"]
    edit = {"type": "object", "properties": props, "required": required, "additionalProperties": False}
    return {"type": "object", "properties": {"edits": {"type": "array", "items": edit, "minItems": k, "maxItems": k}},
            "required": ["edits"], "additionalProperties": False}


def prompt_fields(report: ErrorReport) -> list[str]:
    """The fields a rule may test: those the examples show text in, plus all_text (all fields without examples)."""
    seen = {name for ex in (*report.uncovered, *report.misfired) for name in ex.fields}
    return [f for f in FIELDS if f in seen or f == "all_text"] if seen else list(FIELDS)


def _example(ex: ExampleView, n: int, words: dict[str, str], max_chars: int) -> str:
    head = f"[{n}] {words['gold']}: {ex.label}"
    if ex.rule_id:
        head += "; " + words["wrong"].format(rule=ex.rule_id, predicted=ex.predicted)
    lines = [head]
    for name, text in ex.fields.items():
        if name == "last_user_text" and text in ex.fields.get("user_text", ""):
            continue  # already shown inside user_text
        flat = " / ".join(part for part in text.split("\n") if part.strip())
        lines.append(f"  {name}: {flat[:max_chars]}")
    return "\n".join(lines)


def render_prompt(
    report: ErrorReport,
    rules: RuleSet,
    k: int,
    *,
    language: Language,
    max_examples: int,
    max_field_chars: int,
    max_confusions: int = 5,
    show_format: bool = False,
) -> tuple[str, str]:
    """(system, user) messages. Examples are interleaved by label so a short prompt still spans many labels.

    `show_format` adds a one-line JSON example, for backends that cannot constrain their output (constrained small
    models copy the example's placeholders instead).
    """
    w = _TEXT[language]
    own = [r for r in rules.rules if r.task == report.task]
    # What stays the same from call to call comes first (task, labels, fields), so llama.cpp reuses its KV cache
    # for that prefix and evaluates only the part that changed (the score, the rules, the examples).
    lines = [w["task"].format(task=report.task), w["labels"] + ", ".join(report.labels), w["fields"],
             w["score"].format(f1=report.scores.weighted_f1)]
    if report.rules:
        lines.append(w["rules"])
        lines += [f"- {r.rule_id} | {r.label} | {r.condition} | {r.support} | {r.precision:.2f}" for r in report.rules]
    else:
        lines.append(w["no_rules"])
    if report.confusions:
        lines.append(w["confusions"])
        lines += [f"- {g} → {p}: {n}" for g, p, n in report.confusions[:max_confusions]]
    n = 0
    shown_all: list[ExampleView] = []
    for title, examples in ((w["uncovered"], report.uncovered), (w["misfired"], report.misfired)):
        shown = _spread(examples, max_examples)
        shown_all += shown
        if shown:
            lines.append(title)
            for ex in shown:
                n += 1
                lines.append(_example(ex, n, w, max_field_chars))
    targets = list(dict.fromkeys(ex.label for ex in shown_all))
    lines.append(w["ask"].format(k=k, ops=w["ops"] if own else ""))
    if targets:
        lines.append(w["focus"] + ", ".join(targets))
    if show_format:
        example = {"edits": [{"op": "add", "label": w["label_slot"], "statement": w["statement_slot"],
                              "field": "user_text", "any_of": [w["term_slot"], w["term_slot"]]}]}
        lines.append(w["format"] + json.dumps(example, ensure_ascii=False))
    return w["system"], "\n".join(lines)


def _spread(examples: Sequence[ExampleView], limit: int) -> list[ExampleView]:
    """Up to `limit` examples, round-robin over gold labels."""
    by_label: dict[str, list[ExampleView]] = {}
    for ex in examples:
        by_label.setdefault(ex.label, []).append(ex)
    out: list[ExampleView] = []
    while len(out) < limit and any(by_label.values()):
        for group in by_label.values():
            if group and len(out) < limit:
                out.append(group.pop(0))
    return out
