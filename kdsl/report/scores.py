"""The report's score sections: the summary cards, the test scores, and the per-class scores with the confusion
matrix (recomputed from the session's files and checked against evaluation.json)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from kdsl.report.markup import Html, esc, note, num, percent, signed, table
from kdsl.report.session import PredictionsOnTest, SessionFiles

TOLERANCE = 1e-9  # recomputed scores vs evaluation.json


def _card(label: str, value: str, sub: str = "") -> str:
    return (f'<div class="card"><div class="label">{esc(label)}</div><div class="value">{esc(value)}</div>'
            f'<div class="sub">{esc(sub)}</div></div>')


def summary_section(s: SessionFiles) -> str:
    search = (s.report or {}).get("search") or {}
    progress = s.progress or {}
    initial = search.get("initial_reward", progress.get("initial_reward", (s.search or {}).get("initial_reward")))
    best = search.get("best_reward", progress.get("best_reward", (s.search or {}).get("best_reward")))
    iterations = search.get("iterations", progress.get("iterations"))
    accepted, _ = s.accepted_ids()
    n_rules = len(s.rules) if s.rules is not None else search.get("rules")
    ev = s.evaluation or {}
    together = ev.get("rules_with_fallback") or {}
    boot = ev.get("bootstrap") or {}
    gain = best - initial if isinstance(best, int | float) and isinstance(initial, int | float) else None
    cards = [
        _card("initial reward", num(initial), "empty rule set, search split"),
        _card("best reward", num(best), f"{signed(gain)} over the initial" if gain is not None else ""),
        _card("iterations", num(iterations, "d") if isinstance(iterations, int) else "–",
              f"stopped by: {s.stop_reason}"),
        _card("rules in the best set", str(n_rules) if n_rules is not None else "–", ""),
        _card("rules accepted", str(len(accepted)) if s.verdict else "–",
              f"{len(s.committed)} committed to memory" if s.committed is not None else
              ("none committed" if s.report else "not committed yet")),
        _card("test weighted F1", num(together.get("weighted_f1")), "rules + fallback" if together else
              "not evaluated yet"),
        _card("Δ weighted F1 (test)", signed(boot.get("delta")),
              f"{percent(boot.get('confidence'))} CI {signed(boot.get('low'))} .. {signed(boot.get('high'))}"
              if boot else "rules + fallback minus fallback"),
    ]
    return f'<div class="cards">{"".join(cards)}</div>'


def test_scores_section(s: SessionFiles) -> str:
    ev = s.evaluation
    if not ev:
        return note("No evaluation.json yet: the sealed test split is scored once verify and commit are done.")
    fallback_name = ev.get("fallback_name", "fallback")
    rows = []
    for key, name in (("rules", "rules alone"), ("fallback", f"{fallback_name} alone"),
                      ("rules_with_fallback", f"rules + {fallback_name}")):
        sc = ev.get(key) or {}
        rows.append([name, num(sc.get("coverage"), ".3f"), num(sc.get("accuracy")),
                     num(sc.get("accuracy_where_fired")), num(sc.get("weighted_f1")), num(sc.get("macro_f1"))])
    scores = table(["predictor", "coverage", "accuracy", "accuracy where fired", "weighted F1", "macro F1"], rows,
                   table_id="test-scores", numeric=range(1, 6))
    boot = ev.get("bootstrap") or {}
    line = ""
    if boot:
        line = note(f"{boot.get('metric', 'weighted_f1')} of rules + {fallback_name} minus {fallback_name} alone: "
                    f"{signed(boot.get('delta'))} ({percent(boot.get('confidence'))} "
                    f"CI {signed(boot.get('low'))} .. {signed(boot.get('high'))}, paired bootstrap of "
                    f"{boot.get('n_resamples', '?')} resamples; share of resamples where the rules do not help: "
                    f"{num(boot.get('p_a_not_better'), '.3f')}).")
    return f'<p class="sub">{esc(ev.get("n", "?"))} test samples.</p>{scores}{line}'


def _check_against_evaluation(s: SessionFiles, p: PredictionsOnTest) -> list[Html]:
    from kdsl.rules import score

    out = []
    for key, pred in (("rules", p.rules), ("rules_with_fallback", p.together)):
        want = ((s.evaluation or {}).get(key) or {}).get("weighted_f1")
        got = score(p.gold, pred).weighted_f1
        if isinstance(want, int | float) and abs(got - want) > TOLERANCE:
            out.append(note(f"Recomputed weighted F1 of {key.replace('_', ' ')} ({got:.4f}) differs from "
                            f"evaluation.json ({want:.4f}): the session's files changed after evaluate, so the "
                            "tables below may not match the scores above.", "warn"))
    return out


def class_scores_section(s: SessionFiles) -> str:
    if not s.evaluation:
        return note("Per-class scores come once the session has evaluated on the sealed test split.")
    need = [s.files[r] for r in ("split", "features", "gold", "rules", "verdict") if not s.path(r).exists()]
    if need or s.gold is None:
        return note(f"Per-class scores need {', '.join(need) or s.files['gold']}, which this folder lacks.", "warn")
    p = s.test_predictions()
    parts: list[str] = list(_check_against_evaluation(s, p))  # p.note is shown once, in the rules section
    labels = sorted({*p.gold, *(x for x in p.together if x is not None)})
    n = len(p.gold)
    support, predicted = Counter(p.gold), Counter(p.together)
    tp = Counter(g for g, x in zip(p.gold, p.together, strict=True) if g == x)
    fired = Counter(x for x in p.rules if x is not None)
    rules_right = Counter(g for g, x in zip(p.gold, p.rules, strict=True) if g == x)
    rows, weighted = [], 0.0
    for lab in labels:
        prec = tp[lab] / predicted[lab] if predicted[lab] else 0.0
        rec = tp[lab] / support[lab] if support[lab] else 0.0
        f1 = 2 * tp[lab] / (support[lab] + predicted[lab]) if support[lab] + predicted[lab] else 0.0
        weighted += f1 * support[lab]
        rows.append([lab, support[lab], predicted[lab], num(prec, ".3f"), num(rec, ".3f"), num(f1, ".3f"),
                     fired[lab], rules_right[lab]])
    rows.append([Html("<b>weighted</b>"), n, n, "", "", num(weighted / n if n else 0.0, ".4f"), sum(fired.values()),
                 sum(rules_right.values())])
    parts.append(note(f"Rules + fallback ({p.fallback_label}, where no accepted rule fires) on the test split; the "
                      "last two columns count the rules alone."))
    parts.append(table(["label", "support", "predicted", "precision", "recall", "F1", "rules fired",
                        "rules right"], rows, table_id="per-class", numeric=range(1, 8),
                       row_class=lambda r: "total" if r == len(labels) else ""))
    parts.append("<h3>Confusion matrix</h3>")
    parts.append(_confusion(p.gold, p.together, labels))
    return "".join(parts)


def _confusion(gold: Sequence[str], pred: Sequence[str | None], labels: Sequence[str]) -> str:
    """Gold labels down, predicted labels across (numbered, the label in each header's tooltip)."""
    counts = Counter(zip(gold, pred, strict=True))
    top = max(counts.values(), default=1)
    index = {lab: i + 1 for i, lab in enumerate(labels)}
    head = "".join(f'<th class="num" title="{esc(lab)}">{index[lab]}</th>' for lab in labels)
    body = []
    for g in labels:
        cells = []
        for x in labels:
            c = counts.get((g, x), 0)
            shade = 0.08 + 0.6 * c / top if c else 0.0
            hue = "40,140,70" if g == x else "200,60,50"
            style = f' style="background:rgba({hue},{shade:.2f})"' if c else ""
            cls = "num diag" if g == x else "num"
            cells.append(f'<td class="{cls}" data-count="{c}"{style}>{c or ""}</td>')
        body.append(f'<tr><th class="rowlabel">{index[g]}. {esc(g)}</th>{"".join(cells)}</tr>')
    return (f'<div class="scroll"><table id="confusion" class="confusion" data-total="{len(gold)}">'
            f'<thead><tr><th>gold \\ predicted</th>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>')

