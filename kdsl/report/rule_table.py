"""The report's rules section: each rule of the best set with its verify statistics, its verdict and, once the
session has evaluated, how it did on the sealed test split."""

from __future__ import annotations

import logging

from kdsl.report.markup import Html, esc, note, num, table
from kdsl.report.session import SessionFiles, verdict_rules

logger = logging.getLogger(__name__)


def rules_section(s: SessionFiles) -> str:
    verdicts = verdict_rules(s.verdict)
    accepted, derived = s.accepted_ids()
    accepted_set = set(accepted)
    committed = set(s.committed or [])
    least = s.config.get("min_precision")
    by_id = {r.id: r for r in s.rules or ()}
    hits: dict[str, tuple[int, int]] = {}
    if s.evaluation and all(s.path(r).exists() for r in ("split", "features", "gold")) and accepted_set:
        try:
            hits = s.test_predictions().rule_hits
        except Exception as e:  # noqa: BLE001 - the test columns are extra; the table stands without them
            logger.warning("report of %s: no test hits per rule: %s", s.folder, e)
    rows, classes = [], []
    ids = [v["rule_id"] for v in verdicts] or list(by_id)
    verdict_by_id = {v["rule_id"]: v for v in verdicts}
    for rid in ids:
        v, rule = verdict_by_id.get(rid), by_id.get(rid)
        stats = (v or {}).get("stats") or {}
        if v is None:
            state, why = "candidate", "not verified yet"
        elif rid in accepted_set:
            state, why = "accepted", "committed to memory" if rid in committed else ""
        elif v.get("accepted"):
            prec = stats.get("precision", 0.0)
            state = "refused"
            why = (f"precision {prec:.2f} < {least}" if isinstance(least, int | float) and prec < least
                   else "dropped in review")
        else:
            state, why = "refused", v.get("reason", "")
        label = (v or {}).get("label") or (rule.label if rule else "?")
        condition = (v or {}).get("condition") or (rule.when.render() if rule else "?")
        statement = (v or {}).get("statement") or (rule.statement if rule else "")
        fired, right = hits.get(rid, (None, None))
        verdict_html = Html(f'<span class="badge {esc(state)}">{esc(state)}</span> {esc(why)}')
        rows.append([Html(f"<code>{esc(rid)}</code>"), label, Html(f"<code>{esc(condition)}</code>"), statement,
                     stats.get("support", "–"), num(stats.get("precision"), ".3f"),
                     num(stats.get("precision_lower"), ".3f"), stats.get("conflicts", "–"), verdict_html,
                     "–" if fired is None else fired, "–" if right is None else right,
                     num(right / fired, ".3f") if fired else "–", rule.origin.author if rule else "–"])
        classes.append(state)
    if not rows:
        return note("No rules yet: the search has not saved a rule set.")
    parts = [note(derived, "warn")] if derived else []
    n_verify = (s.verdict or {}).get("n_samples")
    where = (s.verdict or {}).get("split") or "verify"
    parts.append(note(f"The candidate rules, each checked on {where}"
                      f"{f' ({n_verify} samples)' if n_verify else ''}: support is the samples it fires on (in a "
                      "cross-fitted session: only samples the search that proposed it never saw), precision the share "
                      "of them it labels right (the estimate), the Wilson lower bound (95%) what the engine ranks "
                      "firing rules by. Test columns: accepted rules on the sealed test split, the precision realized "
                      "there beside the estimate."))
    parts.append(table(["id", "label", "condition", "statement", "support", "precision", "Wilson lower bound",
                        "conflicts", "verdict", "test fired", "test right", "test precision", "author"], rows,
                       table_id="rules-table", numeric=(4, 5, 6, 7, 9, 10, 11), row_class=lambda r: classes[r]))
    tasks = (s.verdict or {}).get("tasks") or []
    if tasks:
        vrows = []
        for t in tasks:
            for key, name in (("rules", "rules alone"), ("fallback", "fallback alone"),
                              ("rules_with_fallback", "rules + fallback")):
                sc = t.get(key) or {}
                vrows.append([t.get("task"), name, num(sc.get("coverage"), ".3f"), num(sc.get("weighted_f1")),
                              num(sc.get("macro_f1"))])
        parts.append(f"<h3>The accepted rules together on {esc(where)}</h3>")
        parts.append(table(["task", "predictor", "coverage", "weighted F1", "macro F1"], vrows, numeric=(2, 3, 4)))
    return "".join(parts)

