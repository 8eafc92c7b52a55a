"""The report's search section: the reward curve (inline SVG), the best path and the search tree, each state named
by the rule edit that made it."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from functools import cache
from typing import Any

from kdsl.report.markup import esc, note, num
from kdsl.report.session import SessionFiles


@cache
def _condition_adapter() -> Any:
    from pydantic import TypeAdapter

    from kdsl.rules import Condition

    return TypeAdapter(Condition)


def _render_condition(raw: Any) -> str:
    """A condition (JSON text or dict) in words, as the verifier renders it; the raw JSON when it does not parse."""
    adapter = _condition_adapter()
    try:
        cond = adapter.validate_json(raw) if isinstance(raw, str) else adapter.validate_python(raw)
        return cond.render()
    except ValueError:
        return raw if isinstance(raw, str) else json.dumps(raw, ensure_ascii=False)


def _parse_edit_key(key: str) -> dict[str, str | None]:
    """`op|target|task|label|{condition}` (RuleEdit.key) -> its parts; the condition rendered in words."""
    op, _, rest = key.partition("|")
    target, _, new = rest.partition("|")
    out: dict[str, str | None] = {"op": op, "target": target or None, "label": None, "condition": None}
    if new:
        _task, _, label_cond = new.partition("|")
        cut = label_cond.find("|{")
        if cut >= 0:
            out["label"], out["condition"] = label_cond[:cut], _render_condition(label_cond[cut + 1:])
        else:
            out["label"] = label_cond
    return out


class _RuleNames:
    """Rule id -> 'label: condition', from the best set and every edit of the tree (a dropped rule is named too)."""

    def __init__(self, s: SessionFiles):
        self.names: dict[str, str] = {}
        for node in (s.search or {}).get("nodes") or []:
            if isinstance(node, dict) and node.get("new_rule") and node.get("edit_key"):
                parts = _parse_edit_key(str(node["edit_key"]))
                self.names[str(node["new_rule"])] = f"{parts['label']}: {parts['condition']}"
        for rule in s.rules or ():
            self.names[rule.id] = f"{rule.label}: {rule.when.render()}"

    def __call__(self, rule_id: str | None) -> str:
        return self.names.get(rule_id or "", rule_id or "?")


def _curve_svg(curve: Sequence[dict[str, Any]], initial: Any) -> str:
    """Best reward (line) and each iteration's reward (dots) against the iteration."""
    points = [(c.get("iteration"), c.get("reward"), c.get("best_reward")) for c in curve if isinstance(c, dict)]
    points = [(i, r, b) for i, r, b in points if all(isinstance(x, int | float) for x in (i, r, b))]
    if not points:
        return note("No search curve yet.")
    w, h, pad_l, pad_b, pad_t, pad_r = 720, 220, 56, 30, 12, 12
    xs = [p[0] for p in points]
    ys = [v for p in points for v in p[1:]] + ([initial] if isinstance(initial, int | float) else [])
    x0, x1 = 0, max(max(xs), 1)
    y0, y1 = min(ys), max(ys)
    if y1 - y0 < 1e-12:
        y0, y1 = y0 - 0.01, y1 + 0.01

    def px(x: float) -> float:
        return pad_l + (x - x0) / (x1 - x0) * (w - pad_l - pad_r)

    def py(y: float) -> float:
        return h - pad_b - (y - y0) / (y1 - y0) * (h - pad_b - pad_t)

    start = [(0, initial)] if isinstance(initial, int | float) else []
    line = " ".join(f"{px(i):.1f},{py(b):.1f}" for i, b in start + [(p[0], p[2]) for p in points])
    dots = "".join(f'<circle cx="{px(i):.1f}" cy="{py(r):.1f}" r="2.5" class="dot"><title>iteration {i}: reward '
                   f'{r:.4f}, best {b:.4f}</title></circle>' for i, r, b in points)
    ticks = "".join(f'<text x="{pad_l - 6}" y="{py(v) + 4:.1f}" text-anchor="end">{v:.3f}</text>'
                    f'<line x1="{pad_l}" x2="{w - pad_r}" y1="{py(v):.1f}" y2="{py(v):.1f}" class="grid"/>'
                    for v in (y0, (y0 + y1) / 2, y1))
    xticks = "".join(f'<text x="{px(v):.1f}" y="{h - 10}" text-anchor="middle">{v}</text>'
                     for v in sorted({0, x1 // 2, x1}))
    return (f'<svg class="curve" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
            f'aria-label="reward by iteration">{ticks}{xticks}'
            f'<polyline points="{line}" class="best"/>{dots}</svg>'
            '<p class="sub">Line: the best reward so far; dots: the reward of the state each iteration evaluated '
            "(search split).</p>")


def _edit_words(node: dict[str, Any], names: _RuleNames) -> str:
    if not node.get("op"):
        return "initial rule set"
    parts = _parse_edit_key(str(node.get("edit_key") or node["op"]))
    new = f"{parts['label']}: {parts['condition']}" if parts["label"] else names(node.get("new_rule"))
    if node["op"] == "add":
        return f"add {new}"
    if node["op"] == "drop":
        return f"drop {names(node.get('target'))}"
    return f"refine {names(node.get('target'))} into {new}"


def search_section(s: SessionFiles) -> str:
    search = s.search
    if not search:
        return note("No search.json yet: the tree is written when the search ends "
                    f"({(s.progress or {}).get('iterations', 0)} iterations checkpointed so far).")
    nodes = [n for n in search.get("nodes") or [] if isinstance(n, dict) and "id" in n]
    names = _RuleNames(s)
    by_id = {n["id"]: n for n in nodes}
    children: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for n in nodes:
        children[n.get("parent")].append(n)
    best_path: list[Any] = []
    cursor, seen = search.get("best_node"), set()
    while cursor is not None and cursor in by_id and cursor not in seen:
        seen.add(cursor)
        best_path.append(cursor)
        cursor = by_id[cursor].get("parent")
    on_path = set(best_path)
    best_node = search.get("best_node")

    def label(n: dict[str, Any]) -> str:
        stats = (f"reward {num(n.get('reward'))} · best below {num(n.get('best'))} · visits {n.get('visits', 0)}"
                 f" · {len(n.get('rule_ids') or [])} rules · iteration {n.get('iteration', '?')}")
        star = "★ " if n["id"] == best_node else ""
        return (f'<span class="node" data-node="{esc(n["id"])}">{star}<b>#{esc(n["id"])}</b> '
                f'<span class="edit">{esc(_edit_words(n, names))}</span> <span class="stats">{esc(stats)}</span>'
                f'</span>')

    visited: set[Any] = set()

    def render(n: dict[str, Any]) -> str:
        visited.add(n["id"])
        kids = [k for k in sorted(children.get(n["id"], []), key=lambda k: k["id"]) if k["id"] not in visited]
        cls = "best" if n["id"] in on_path else ""
        li = f'<li class="{cls}">' if cls else "<li>"
        if not kids:
            return f"{li}{label(n)}</li>"
        opened = " open" if n["id"] in on_path else ""
        return (f"{li}<details{opened}><summary>{label(n)} <span class=\"count\">({len(kids)} "
                f"{'child' if len(kids) == 1 else 'children'})</span></summary><ul>{''.join(map(render, kids))}</ul>"
                f"</details></li>")

    roots = sorted(children.get(None, []), key=lambda k: k["id"])
    tree = "".join(render(r) for r in roots)
    orphans = [n for n in nodes if n["id"] not in visited]
    if orphans:
        tree += "".join(f"<li>{label(n)} (its parent is not in the tree)</li>" for n in orphans)
    path_words = "".join(f"<li>{esc(_edit_words(by_id[i], names))} → reward {num(by_id[i].get('reward'))}</li>"
                         for i in reversed(best_path))
    totals = search.get("totals") or {}
    head = note(f"{search.get('strategy', '?')} search with the {search.get('proposer', '?')} author: "
                f"{len(nodes)} states, {search.get('iterations', '?')} iterations, stopped by "
                f"{search.get('stop_reason', '?')}. {totals.get('edits', 0)} valid edits, "
                f"{totals.get('duplicates', 0)} duplicates, {totals.get('no_ops', 0)} no-ops, invalid output by "
                f"reason: {json.dumps(totals.get('invalid') or {}, ensure_ascii=False)}.")
    return (f"{head}{_curve_svg(search.get('curve') or [], search.get('initial_reward'))}"
            f"<h3>Best path</h3><ol class=\"path\">{path_words}</ol>"
            f"<h3>Tree</h3><p class=\"sub\">★ the best state; the best path is marked and open, click a state to "
            f"see what the search tried from it.</p><ul id=\"search-tree\" class=\"tree\">{tree}</ul>")

