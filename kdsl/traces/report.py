"""One self-contained HTML page per discovery session: `render_report(session_dir)` and `write_report(...)`.

The page carries its CSS inline, draws with HTML tables, `<details>` and inline SVG, and loads nothing: a
Content-Security-Policy forbids scripts and every fetch. Every string from data or a model (labels, terms, rule
statements, the author's output) is escaped: model output is untrusted. A session that crashed or still runs renders
what its folder holds, with a note for each missing or damaged file; no section can stop the page.

Per-class scores and the confusion matrix are not in evaluation.json: they are recomputed here from the session's
split, gold labels, features, rules and verdict, the way the evaluate node predicts, and checked against
evaluation.json. The test split is sealed, so this happens only after evaluate has run.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import logging
import math
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdsl.traces.events import TraceEvent, TraceLog

logger = logging.getLogger(__name__)

REPORT_HTML = "report.html"
MAX_TIMELINE_ROWS = 2000  # a long session keeps its first and last events; the middle is counted
SHORT_OUTPUT_CHARS = 160  # of an event's output shown in the timeline row; the rest opens on a click
TOLERANCE = 1e-9  # recomputed scores vs evaluation.json


# -- escaping -------------------------------------------------------------------------------------------------------
class Html(str):
    """A string that is already HTML (built from escaped parts); everything else is text and gets escaped."""


def esc(value: Any) -> str:
    """Text -> HTML text (quotes too, so it is safe inside attributes); `Html` passes through."""
    if isinstance(value, Html):
        return value
    return html.escape("" if value is None else str(value), quote=True)


def _num(value: Any, spec: str = ".4f") -> str:
    if isinstance(value, bool) or not isinstance(value, int | float) or (isinstance(value, float)
                                                                          and not math.isfinite(value)):
        return "–"
    return format(value, spec)


def _signed(value: Any) -> str:
    return _num(value, "+.4f")


def _percent(share: Any) -> str:
    return "–" if _num(share) == "–" else f"{share * 100:.0f}%"


def _table(headers: Sequence[Any], rows: Iterable[Sequence[Any]], *, table_id: str | None = None,
           numeric: Iterable[int] = (), row_class: Callable[[int], str] | None = None, extra: str = "") -> Html:
    """A table; cells are text (escaped) unless they are `Html`. Columns in `numeric` align right."""
    num = set(numeric)
    ident = f' id="{esc(table_id)}"' if table_id else ""
    head = "".join(f'<th{" class=num" if i in num else ""}>{esc(h)}</th>' for i, h in enumerate(headers))
    body = []
    for r, row in enumerate(rows):
        cls = row_class(r) if row_class else ""
        cells = "".join(f'<td{" class=num" if i in num else ""}>{esc(c)}</td>' for i, c in enumerate(row))
        body.append(f'<tr class="{esc(cls)}">{cells}</tr>' if cls else f"<tr>{cells}</tr>")
    return Html(f"<table{ident}{extra}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")


def _note(text: Any, kind: str = "note") -> Html:
    return Html(f'<p class="{kind}">{esc(text)}</p>')


# -- reading the session folder -------------------------------------------------------------------------------------
@dataclass
class _Session:
    """What a session folder holds; None where a file is missing or damaged (`notes` says which)."""

    folder: Path
    files: dict[str, str]  # role -> file name, from the graph's own constants
    head: dict[str, Any] | None = None  # config.json: session_id, created, kdsl_version, config
    progress: dict[str, Any] | None = None
    gold: dict[str, Any] | None = None
    search: dict[str, Any] | None = None
    verdict: dict[str, Any] | None = None
    evaluation: dict[str, Any] | None = None
    report: dict[str, Any] | None = None
    committed: list[str] | None = None
    rules: Any = None  # kdsl.rules.RuleSet of the best set so far
    events: list[TraceEvent] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    _test: _TestPredictions | None = None

    @property
    def session_id(self) -> str:
        return str((self.head or {}).get("session_id") or self.folder.name)

    @property
    def config(self) -> dict[str, Any]:
        return (self.head or {}).get("config") or (self.report or {}).get("config") or {}

    @property
    def task(self) -> str | None:
        return self.config.get("task") or (self.gold or {}).get("task")

    @property
    def status(self) -> str:
        """As `kdsl sessions list` says it: finished, stopped (crashed, killed or still running) or new."""
        return "finished" if self.report else ("stopped" if self.progress else "new")

    def path(self, role: str) -> Path:
        return self.folder / self.files[role]

    def test_predictions(self) -> _TestPredictions:
        """The test split's predictions, recomputed once (both the per-class and the rules section read them)."""
        if self._test is None:
            self._test = _recompute_test(self)
        return self._test

    def accepted_ids(self) -> tuple[list[str], str | None]:
        """The rule ids the session accepted, and a note when they had to be derived from the verdict."""
        if self.report and isinstance(self.report.get("accepted_rules"), list):
            return [str(r.get("id")) for r in self.report["accepted_rules"] if isinstance(r, dict)], None
        if not self.verdict:
            return [], None
        least = self.config.get("min_precision", 0.0)
        ids = [v["rule_id"] for v in _verdict_rules(self.verdict)
               if v.get("accepted") and (v.get("stats") or {}).get("precision", 0.0) >= least]
        return ids, ("report.json is missing: the accepted rules are the verdict's with precision at least "
                     f"{_num(least, '.2f')} (a review may have dropped some of them)")


def _session_files() -> dict[str, str]:
    # Imported here: kdsl.graph imports kdsl.traces (and loads langgraph), so the graph's file names are read late.
    from kdsl.graph import nodes
    from kdsl.graph.session import CONFIG

    return {"config": CONFIG, "split": nodes.SPLIT, "features": nodes.FEATURES, "gold": nodes.GOLD,
            "rules": nodes.RULES, "progress": nodes.PROGRESS, "search": nodes.SEARCH, "verdict": nodes.VERDICT,
            "evaluation": nodes.EVALUATION, "report": nodes.REPORT, "events": nodes.EVENTS,
            "committed": nodes.COMMITTED}


def _read_json(path: Path, notes: list[str], kind: type) -> Any:
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        notes.append(f"{path.name} could not be read ({type(e).__name__}: {e}); what needs it is left out.")
        return None
    if not isinstance(data, kind):
        notes.append(f"{path.name} does not hold a JSON {kind.__name__}; what needs it is left out.")
        return None
    return data


def _load_session(session_dir: str | Path) -> _Session:
    """Read every file of a session folder that exists; never raises for a missing or damaged file."""
    folder = Path(session_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"no session folder {folder}; see `kdsl sessions list`")
    s = _Session(folder=folder, files=_session_files())
    for role, kind in (("config", dict), ("progress", dict), ("gold", dict), ("search", dict), ("verdict", dict),
                       ("evaluation", dict), ("report", dict), ("committed", list)):
        setattr(s, "head" if role == "config" else role, _read_json(s.path(role), s.notes, kind))
    if s.head is None and not s.path("config").exists():
        s.notes.append("config.json is missing: this folder is not (yet) a complete session.")
    if s.path("rules").exists():
        from kdsl.errors import KdslError
        from kdsl.rules import RuleSet

        try:
            s.rules = RuleSet.load(s.path("rules"))
        except (KdslError, ValueError) as e:
            s.notes.append(f"rules.json could not be read ({e}).")
    s.events = TraceLog(s.path("events")).read()
    missing = [s.files[r] for r in ("split", "features", "rules", "search", "verdict", "evaluation", "report",
                                    "events") if not s.path(r).exists()]
    if missing and s.status != "finished":
        s.notes.insert(0, f"This session is {s.status}: it crashed, was stopped, or is still running (continue it "
                          f"with `kdsl discover --resume {s.session_id}`). Not there yet: {', '.join(missing)}. "
                          "The page shows what exists.")
    elif missing:
        s.notes.append(f"Missing files of a finished session: {', '.join(missing)}.")
    return s


def _verdict_rules(verdict: dict[str, Any] | None) -> list[dict[str, Any]]:
    return [v for v in (verdict or {}).get("rules") or [] if isinstance(v, dict) and "rule_id" in v]


# -- rules and edits in words ---------------------------------------------------------------------------------------
_CONDITION_ADAPTER: Any = None


def _render_condition(raw: Any) -> str:
    """A condition (JSON text or dict) in words, as the verifier renders it; the raw JSON when it does not parse."""
    global _CONDITION_ADAPTER
    if _CONDITION_ADAPTER is None:
        from pydantic import TypeAdapter

        from kdsl.rules import Condition

        _CONDITION_ADAPTER = TypeAdapter(Condition)
    try:
        cond = _CONDITION_ADAPTER.validate_json(raw) if isinstance(raw, str) else \
            _CONDITION_ADAPTER.validate_python(raw)
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

    def __init__(self, s: _Session):
        self.names: dict[str, str] = {}
        for node in (s.search or {}).get("nodes") or []:
            if isinstance(node, dict) and node.get("new_rule") and node.get("edit_key"):
                parts = _parse_edit_key(str(node["edit_key"]))
                self.names[str(node["new_rule"])] = f"{parts['label']}: {parts['condition']}"
        for rule in s.rules or ():
            self.names[rule.id] = f"{rule.label}: {rule.when.render()}"

    def __call__(self, rule_id: str | None) -> str:
        return self.names.get(rule_id or "", rule_id or "?")


# -- sections ---------------------------------------------------------------------------------------------------------
def _section(anchor: str, title: str, body: Callable[[], str], s: _Session) -> Html:
    """One section; a section that fails says so in the page and the log instead of stopping the report."""
    try:
        inner = body()
    except Exception as e:  # noqa: BLE001 - the page must render whatever one section meets
        logger.warning("report of %s: the %s section failed: %s", s.folder, anchor, e)
        logger.debug("the %s section's error", anchor, exc_info=True)
        inner = _note(f"This section could not be rendered from the session's files ({type(e).__name__}: {e}).",
                      "warn")
    return Html(f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>{inner}</section>')


def _created(s: _Session) -> str:
    created = (s.head or {}).get("created")
    if not isinstance(created, int | float):
        return "–"
    return dt.datetime.fromtimestamp(created, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _stop_reason(s: _Session) -> Any:
    return ((s.report or {}).get("search") or {}).get("stop_reason") or (s.search or {}).get("stop_reason") or \
        (s.progress or {}).get("stop_reason") or ("still searching or stopped" if s.progress else "–")


def _header(s: _Session) -> str:
    c = s.config
    budgets = [f"{c.get('iterations', '?')} iterations"]
    if c.get("budget_seconds") is not None:
        budgets.append(f"{c['budget_seconds']} s")
    if c.get("budget_tokens") is not None:
        budgets.append(f"{c['budget_tokens']} tokens")
    verify = (f"support ≥ {c.get('min_support', '?')}, precision ≥ {c.get('min_precision', '?')}, "
              f"Wilson lower bound ≥ {c.get('min_precision_lower', '?')}")
    data = (s.report or {}).get("data") or {}
    sizes = "–" if not data else f"search {data.get('search')} · verify {data.get('verify')} · test {data.get('test')}"
    rows = [
        ("session", s.session_id), ("status", s.status), ("created", _created(s)),
        ("kdsl", (s.head or {}).get("kdsl_version", "–")), ("task", s.task or "–"), ("data", c.get("data", "–")),
        ("features", "dialogue text and images (OCR, visual labels)" if c.get("images", True) else "dialogue text"),
        ("split sizes", sizes), ("author model", c.get("author", "–")), ("strategy", c.get("strategy", "–")),
        ("budgets", ", ".join(budgets)), ("edits per call (k) · seed", f"{c.get('k', '?')} · {c.get('seed', '?')}"),
        ("verify thresholds", verify), ("review by hand", "yes" if c.get("review") else "no"),
        ("stop reason", _stop_reason(s)),
    ]
    dl = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in rows)
    notes = "".join(_note(n, "warn") for n in s.notes)
    return f'<dl class="meta">{dl}</dl>{notes}'


def _card(label: str, value: str, sub: str = "") -> str:
    return (f'<div class="card"><div class="label">{esc(label)}</div><div class="value">{esc(value)}</div>'
            f'<div class="sub">{esc(sub)}</div></div>')


def _summary(s: _Session) -> str:
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
        _card("initial reward", _num(initial), "empty rule set, search split"),
        _card("best reward", _num(best), f"{_signed(gain)} over the initial" if gain is not None else ""),
        _card("iterations", _num(iterations, "d") if isinstance(iterations, int) else "–",
              f"stopped by: {_stop_reason(s)}"),
        _card("rules in the best set", str(n_rules) if n_rules is not None else "–", ""),
        _card("rules accepted", str(len(accepted)) if s.verdict else "–",
              f"{len(s.committed)} committed to memory" if s.committed is not None else
              ("none committed" if s.report else "not committed yet")),
        _card("test weighted F1", _num(together.get("weighted_f1")), "rules + fallback" if together else
              "not evaluated yet"),
        _card("Δ weighted F1 (test)", _signed(boot.get("delta")),
              f"{_percent(boot.get('confidence'))} CI {_signed(boot.get('low'))} .. {_signed(boot.get('high'))}"
              if boot else "rules + fallback minus fallback"),
    ]
    return f'<div class="cards">{"".join(cards)}</div>'


def _test_scores(s: _Session) -> str:
    ev = s.evaluation
    if not ev:
        return _note("No evaluation.json yet: the sealed test split is scored once verify and commit are done.")
    fallback_name = ev.get("fallback_name", "fallback")
    rows = []
    for key, name in (("rules", "rules alone"), ("fallback", f"{fallback_name} alone"),
                      ("rules_with_fallback", f"rules + {fallback_name}")):
        sc = ev.get(key) or {}
        rows.append([name, _num(sc.get("coverage"), ".3f"), _num(sc.get("accuracy")),
                     _num(sc.get("accuracy_where_fired")), _num(sc.get("weighted_f1")), _num(sc.get("macro_f1"))])
    table = _table(["predictor", "coverage", "accuracy", "accuracy where fired", "weighted F1", "macro F1"], rows,
                   table_id="test-scores", numeric=range(1, 6))
    boot = ev.get("bootstrap") or {}
    line = ""
    if boot:
        line = _note(f"{boot.get('metric', 'weighted_f1')} of rules + {fallback_name} minus {fallback_name} alone: "
                     f"{_signed(boot.get('delta'))} ({_percent(boot.get('confidence'))} "
                     f"CI {_signed(boot.get('low'))} .. {_signed(boot.get('high'))}, paired bootstrap of "
                     f"{boot.get('n_resamples', '?')} resamples; share of resamples where the rules do not help: "
                     f"{_num(boot.get('p_a_not_better'), '.3f')}).")
    return f'<p class="sub">{esc(ev.get("n", "?"))} test samples.</p>{table}{line}'


# -- per-class scores and the confusion matrix (recomputed) ---------------------------------------------------------
@dataclass(frozen=True)
class _TestPredictions:
    gold: list[str]
    rules: list[str | None]  # None: no accepted rule fired
    together: list[str | None]  # rules, else the fallback
    fallback_label: str
    rule_hits: dict[str, tuple[int, int]]  # accepted rule id -> (fired, correct) on test
    note: str | None


def _recompute_test(s: _Session) -> _TestPredictions:
    """Predict the test split as the evaluate node did: accepted rules ranked by their verify Wilson lower bound,
    the majority label of the search split where none fires."""
    from kdsl.agents.verifier import majority_fallback
    from kdsl.data.splits import Split
    from kdsl.rules import RuleEngine, with_fallback
    from kdsl.tools.features import FeatureTable

    task = s.task
    gold_by_id: dict[str, str | None] = (s.gold or {}).get("gold") or {}
    split = Split.load(s.path("split"))
    search_gold = [str(gold_by_id[i]) for i in split.ids("search") if gold_by_id.get(i) is not None]
    fallback = majority_fallback(search_gold, [task] * len(search_gold))[task]
    ids = [i for i in split.ids("test") if gold_by_id.get(i) is not None]
    gold = [str(gold_by_id[i]) for i in ids]
    engine = RuleEngine(FeatureTable.load(s.path("features")).rows(ids), [task] * len(ids))
    accepted, note = s.accepted_ids()
    confidence = {v["rule_id"]: (v.get("stats") or {}).get("precision_lower", 0.0) for v in _verdict_rules(s.verdict)}
    rules = [r for r in (s.rules or ()) if r.id in set(accepted)]
    fired = engine.fire_matrix(rules)
    prediction = engine.predict(rules, [confidence.get(r.id, 0.0) for r in rules], fired=fired)
    hits = {r.id: (int(fired[:, j].sum()), sum(1 for i in range(len(ids)) if fired[i, j] and gold[i] == r.label))
            for j, r in enumerate(rules)}
    rule_pred = list(prediction.labels)
    return _TestPredictions(gold, rule_pred, with_fallback(rule_pred, [fallback] * len(ids)), fallback, hits, note)


def _check_against_evaluation(s: _Session, p: _TestPredictions) -> list[Html]:
    from kdsl.rules import score

    out = []
    for key, pred in (("rules", p.rules), ("rules_with_fallback", p.together)):
        want = ((s.evaluation or {}).get(key) or {}).get("weighted_f1")
        got = score(p.gold, pred).weighted_f1
        if isinstance(want, int | float) and abs(got - want) > TOLERANCE:
            out.append(_note(f"Recomputed weighted F1 of {key.replace('_', ' ')} ({got:.4f}) differs from "
                             f"evaluation.json ({want:.4f}): the session's files changed after evaluate, so the "
                             "tables below may not match the scores above.", "warn"))
    return out


def _classes(s: _Session) -> str:
    if not s.evaluation:
        return _note("Per-class scores come once the session has evaluated on the sealed test split.")
    need = [s.files[r] for r in ("split", "features", "gold", "rules", "verdict") if not s.path(r).exists()]
    if need or s.gold is None:
        return _note(f"Per-class scores need {', '.join(need) or s.files['gold']}, which this folder lacks.", "warn")
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
        rows.append([lab, support[lab], predicted[lab], _num(prec, ".3f"), _num(rec, ".3f"), _num(f1, ".3f"),
                     fired[lab], rules_right[lab]])
    rows.append([Html("<b>weighted</b>"), n, n, "", "", _num(weighted / n if n else 0.0, ".4f"), sum(fired.values()),
                 sum(rules_right.values())])
    parts.append(_note(f"Rules + fallback ({p.fallback_label!r}, the majority label of the search split, where no "
                       "accepted rule fires) on the test split; the last two columns count the rules alone."))
    parts.append(_table(["label", "support", "predicted", "precision", "recall", "F1", "rules fired",
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


# -- rules ------------------------------------------------------------------------------------------------------------
def _rules(s: _Session) -> str:
    verdicts = _verdict_rules(s.verdict)
    accepted, note = s.accepted_ids()
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
                     stats.get("support", "–"), _num(stats.get("precision"), ".3f"),
                     _num(stats.get("precision_lower"), ".3f"), stats.get("conflicts", "–"), verdict_html,
                     "–" if fired is None else fired, "–" if right is None else right,
                     rule.origin.author if rule else "–"])
        classes.append(state)
    if not rows:
        return _note("No rules yet: the search has not saved a rule set.")
    parts = [_note(note, "warn")] if note else []
    n_verify = (s.verdict or {}).get("n_samples")
    parts.append(_note(f"The best rule set of the search, each rule checked on the verify split"
                       f"{f' ({n_verify} samples)' if n_verify else ''}: support is the samples it fires on, "
                       "precision the share of them it labels right, the Wilson lower bound (95%) what the engine "
                       "ranks firing rules by. Test columns: accepted rules on the sealed test split."))
    parts.append(_table(["id", "label", "condition", "statement", "support", "precision", "Wilson lower bound",
                         "conflicts", "verdict", "test fired", "test right", "author"], rows,
                        table_id="rules-table", numeric=(4, 5, 6, 7, 9, 10), row_class=lambda r: classes[r]))
    tasks = (s.verdict or {}).get("tasks") or []
    if tasks:
        vrows = []
        for t in tasks:
            for key, name in (("rules", "rules alone"), ("fallback", "fallback alone"),
                              ("rules_with_fallback", "rules + fallback")):
                sc = t.get(key) or {}
                vrows.append([t.get("task"), name, _num(sc.get("coverage"), ".3f"), _num(sc.get("weighted_f1")),
                              _num(sc.get("macro_f1"))])
        parts.append("<h3>The whole best set on the verify split</h3>")
        parts.append(_table(["task", "predictor", "coverage", "weighted F1", "macro F1"], vrows, numeric=(2, 3, 4)))
    return "".join(parts)


# -- the search -----------------------------------------------------------------------------------------------------
def _curve_svg(curve: Sequence[dict[str, Any]], initial: Any) -> str:
    """Best reward (line) and each iteration's reward (dots) against the iteration."""
    points = [(c.get("iteration"), c.get("reward"), c.get("best_reward")) for c in curve if isinstance(c, dict)]
    points = [(i, r, b) for i, r, b in points if all(isinstance(x, int | float) for x in (i, r, b))]
    if not points:
        return _note("No search curve yet.")
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


def _tree(s: _Session) -> str:
    search = s.search
    if not search:
        return _note("No search.json yet: the tree is written when the search ends "
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
        stats = (f"reward {_num(n.get('reward'))} · best below {_num(n.get('best'))} · visits {n.get('visits', 0)}"
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
    path_words = "".join(f"<li>{esc(_edit_words(by_id[i], names))} → reward {_num(by_id[i].get('reward'))}</li>"
                         for i in reversed(best_path))
    totals = search.get("totals") or {}
    head = _note(f"{search.get('strategy', '?')} search with the {search.get('proposer', '?')} author: "
                 f"{len(nodes)} states, {search.get('iterations', '?')} iterations, stopped by "
                 f"{search.get('stop_reason', '?')}. {totals.get('edits', 0)} valid edits, "
                 f"{totals.get('duplicates', 0)} duplicates, {totals.get('no_ops', 0)} no-ops, invalid output by "
                 f"reason: {json.dumps(totals.get('invalid') or {}, ensure_ascii=False)}.")
    return (f"{head}{_curve_svg(search.get('curve') or [], search.get('initial_reward'))}"
            f"<h3>Best path</h3><ol class=\"path\">{path_words}</ol>"
            f"<h3>Tree</h3><p class=\"sub\">★ the best state; the best path is marked and open, click a state to "
            f"see what the search tried from it.</p><ul id=\"search-tree\" class=\"tree\">{tree}</ul>")


# -- costs and timeline ---------------------------------------------------------------------------------------------
def _costs(s: _Session) -> str:
    if not s.events and not s.search:
        return _note("No trace events yet.")
    agents: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0, 0, 0.0])
    nodes: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for e in s.events:
        if e.agent:
            a = agents[(e.agent, e.model or "–")]
            a[0] += 1
            a[1] += e.prompt_tokens
            a[2] += e.completion_tokens
            a[3] += e.seconds
        else:
            nodes[e.node][0] += 1
            nodes[e.node][1] += e.seconds
    parts = []
    if agents:
        rows = [[agent, model, int(c), int(p), int(q), int(p + q), _num(sec, ".3f"),
                 _num((p + q) / sec, ".0f") if sec > 0 else "–"]
                for (agent, model), (c, p, q, sec) in sorted(agents.items())]
        parts.append("<h3>Agent calls</h3>")
        parts.append(_table(["agent", "model", "calls", "prompt tokens", "completion tokens", "tokens", "seconds",
                             "tokens / s"], rows, table_id="agent-costs", numeric=range(2, 8)))
    if nodes:
        order = {name: i for i, name in enumerate(["prepare", "discover", "verify", "review", "commit", "evaluate",
                                                   "report"])}
        rows = [[name, int(c), _num(sec, ".2f")] for name, (c, sec) in sorted(nodes.items(),
                                                                                key=lambda kv: order.get(kv[0], 99))]
        parts.append("<h3>Graph nodes</h3>")
        parts.append(_table(["node", "runs", "seconds"], rows, table_id="node-costs", numeric=(1, 2)))
    timings = (s.search or {}).get("timings") or {}
    if timings:
        rows = [[k, _num(v, ".3f")] for k, v in timings.items()]
        parts.append("<h3>Where the search's time went</h3>")
        parts.append(_table(["part", "seconds"], rows, numeric=(1,)))
    return "".join(parts)


def _short(text: str) -> str:
    if len(text) <= SHORT_OUTPUT_CHARS:
        return esc(text)
    return (f"<details><summary>{esc(text[:SHORT_OUTPUT_CHARS])}…</summary><pre>{esc(text)}</pre></details>")


def _timeline(s: _Session) -> str:
    events = s.events
    if not events:
        return _note("No trace events yet.")
    start = events[0].time
    shown: list[TraceEvent | None] = list(events)
    if len(events) > MAX_TIMELINE_ROWS:
        half = MAX_TIMELINE_ROWS // 2
        shown = [*events[:half], None, *events[-half:]]
    rows, classes = [], []
    for e in shown:
        if e is None:
            rows.append(["…", f"{len(events) - MAX_TIMELINE_ROWS} events left out", "", "", "", "", "", ""])
            classes.append("gap")
            continue
        rows.append([_num(e.time - start, ".2f"), e.node, e.agent or "", e.model or "", e.tokens or "",
                     _num(e.seconds, ".3f"), _num(e.reward), Html(_short(e.output or ""))])
        classes.append("agent" if e.agent else "nodeevent")
    return (_note(f"{len(events)} events: one per graph node and one per author call; +s counts from the first.")
            + _table(["+s", "node", "agent", "model", "tokens", "seconds", "best reward", "output"], rows,
                     table_id="timeline", numeric=(0, 4, 5, 6), row_class=lambda r: classes[r]))


def _files(s: _Session) -> str:
    rows = []
    for name in s.files.values():
        path = s.folder / name
        rows.append([name, f"{path.stat().st_size:,} bytes" if path.exists() else "missing"])
    return _note(f"Folder: {s.folder}") + _table(["file", "size"], rows, numeric=(1,))


# -- the page ---------------------------------------------------------------------------------------------------------
_CSS = """
:root{--fg:#1d2330;--muted:#5b6473;--line:#d9dee7;--bg:#f6f7f9;--ok:#1f7a45;--bad:#b3362b;--accent:#2457a6}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI","Noto Sans","Noto Sans CJK SC","PingFang SC",
"Microsoft YaHei",sans-serif;color:var(--fg);background:var(--bg)}
header,main{max-width:1280px;margin:0 auto;padding:0 20px}
header{padding-top:18px}
h1{font-size:22px;margin:0 0 4px}
h2{font-size:18px;margin:28px 0 8px;padding-bottom:4px;border-bottom:2px solid var(--line)}
h3{font-size:15px;margin:18px 0 6px}
nav{display:flex;flex-wrap:wrap;gap:12px;margin:8px 0 4px}
nav a{color:var(--accent);text-decoration:none}
section{background:#fff;border:1px solid var(--line);border-radius:8px;padding:4px 18px 16px;margin:16px 0}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:3px 16px;margin:10px 0}
dl.meta dt{color:var(--muted)} dl.meta dd{margin:0;word-break:break-all}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:12px 0}
.card{border:1px solid var(--line);border-radius:8px;padding:8px 14px;min-width:150px;background:#fbfcfd}
.card .label{color:var(--muted);font-size:12px}.card .value{font-size:22px;font-weight:600}
.card .sub{color:var(--muted);font-size:12px}
table{border-collapse:collapse;margin:6px 0;font-size:13px}
th,td{border-bottom:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eef1f5;position:sticky;top:0}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
tr.total td{border-top:2px solid var(--fg);font-weight:600}
tr.accepted{background:#eef8f1} tr.refused td{color:#444}
.badge{display:inline-block;padding:0 6px;border-radius:4px;font-size:12px;font-weight:600;color:#fff}
.badge.accepted{background:var(--ok)} .badge.refused{background:var(--bad)} .badge.candidate{background:#888}
code{font-size:12px;background:#f1f3f6;padding:0 3px;border-radius:3px;overflow-wrap:anywhere}
#rules-table td:nth-child(-n+2),#rules-table td:nth-child(9){white-space:nowrap}
#rules-table td:nth-child(3){min-width:180px} #rules-table td:nth-child(4){min-width:220px}
pre{white-space:pre-wrap;word-break:break-all;font-size:12px;margin:4px 0}
.note{color:var(--muted)} .warn{color:#8a4b00;background:#fff6e5;border:1px solid #f0d39b;padding:6px 10px;
border-radius:6px}
.sub{color:var(--muted)}
.scroll{overflow-x:auto}
table.confusion td{min-width:26px;text-align:center} table.confusion td.diag{font-weight:700}
table.confusion th.rowlabel{white-space:nowrap;font-weight:400;background:#fff;position:static}
ul.tree,ul.tree ul{list-style:none;margin:0;padding-left:18px;border-left:1px dashed var(--line)}
ul.tree{padding-left:4px;border:none}
ul.tree li{margin:2px 0}
ul.tree summary{cursor:pointer}
ul.tree li.best>.node,ul.tree li.best>details>summary>.node{background:#e4f3e9;border-radius:4px;padding:0 4px;
outline:1px solid #9fd3b1}
.node .stats,.count{color:var(--muted);font-size:12px}
.node .edit{word-break:break-all}
ol.path li{margin:2px 0}
svg.curve{max-width:100%;height:auto;font-size:11px;fill:var(--muted)}
svg.curve .grid{stroke:var(--line)} svg.curve .best{fill:none;stroke:var(--ok);stroke-width:2}
svg.curve .dot{fill:var(--accent);opacity:.6}
#timeline tr.nodeevent td{background:#f7f8fb}
#timeline td:last-child{max-width:560px;word-break:break-all}
footer{color:var(--muted);font-size:12px;text-align:center;padding:20px}
"""

# No script runs and nothing is fetched, whatever a rule or a model wrote: the page only needs its own inline CSS.
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"

_SECTIONS: tuple[tuple[str, str, Callable[[_Session], str]], ...] = (
    ("summary", "Summary", _summary),
    ("test", "Test scores", _test_scores),
    ("classes", "Per-class scores", _classes),
    ("rules", "Rules", _rules),
    ("search", "Search", _tree),
    ("costs", "Costs", _costs),
    ("timeline", "Timeline", _timeline),
    ("files", "Files", _files),
)


def render_report(session_dir: str | Path) -> str:
    """The session's report as one self-contained HTML page (inline CSS and SVG, no script, no fetch).

    Args:
        session_dir: the session folder (`KDSL_HOME/sessions/<id>`). Missing or damaged files leave a note.

    Raises:
        FileNotFoundError: the folder does not exist.
    """
    s = _load_session(session_dir)
    header = _section("session", "Session", lambda: _header(s), s)
    body = "".join(_section(anchor, title, (lambda fn=fn: fn(s)), s) for anchor, title, fn in _SECTIONS)
    nav = "".join(f'<a href="#{esc(a)}">{esc(t)}</a>' for a, t, _ in (("session", "Session", None), *_SECTIONS))
    from kdsl import __version__

    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{esc(_CSP)}">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>kdsl session {esc(s.session_id)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>kdsl session <code>{esc(s.session_id)}</code></h1>"
        f'<div class="sub">{esc(s.task or "?")} · {esc(s.config.get("author", "?"))} author · '
        f'{esc(s.config.get("strategy", "?"))} · {esc(s.status)}</div><nav>{nav}</nav></header>'
        f"<main>{header}{body}</main>"
        f"<footer>written by kdsl {esc(__version__)} from the files in {esc(s.folder)}</footer>"
        "</body></html>\n"
    )


def write_report(session_dir: str | Path, out: str | Path | None = None) -> Path:
    """Render the report and write it (atomically) to `out`, by default `<session_dir>/report.html`."""
    html_text = render_report(session_dir)
    path = Path(out) if out is not None else Path(session_dir) / REPORT_HTML
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(html_text, encoding="utf-8")
    os.replace(tmp, path)
    return path
