"""What a session folder holds, read without ever failing on a missing or damaged file, and the test split's
predictions recomputed from it.

Per-class scores and the confusion matrix are not in evaluation.json: they are recomputed here from the session's
split, gold labels, features, rules and verdict, the way the evaluate node predicts. The test split is sealed, so
this happens only after evaluate has run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdsl.graph import layout
from kdsl.report.markup import num
from kdsl.traces.events import TraceEvent, TraceLog


@dataclass(frozen=True)
class PredictionsOnTest:
    """The test split's predictions, recomputed from the session's files (evaluation.json keeps only scores)."""

    gold: list[str]
    rules: list[str | None]  # None: no accepted rule fired
    together: list[str | None]  # rules, else the fallback
    fallback_label: str  # says what decides where no rule fires: the majority label, or the session's decider
    rule_hits: dict[str, tuple[int, int]]  # accepted rule id -> (fired, correct) on test
    note: str | None


@dataclass
class SessionFiles:
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
    _test: PredictionsOnTest | None = None

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

    @property
    def stop_reason(self) -> Any:
        return ((self.report or {}).get("search") or {}).get("stop_reason") or \
            (self.search or {}).get("stop_reason") or (self.progress or {}).get("stop_reason") or \
            ("still searching or stopped" if self.progress else "–")

    def path(self, role: str) -> Path:
        return self.folder / self.files[role]

    def test_predictions(self) -> PredictionsOnTest:
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
        ids = [v["rule_id"] for v in verdict_rules(self.verdict)
               if v.get("accepted") and (v.get("stats") or {}).get("precision", 0.0) >= least]
        return ids, ("report.json is missing: the accepted rules are the verdict's with precision at least "
                     f"{num(least, '.2f')} (a review may have dropped some of them)")


def _session_files() -> dict[str, str]:
    return {"config": layout.CONFIG, "split": layout.SPLIT, "features": layout.FEATURES, "gold": layout.GOLD,
            "rules": layout.RULES, "progress": layout.PROGRESS, "search": layout.SEARCH, "verdict": layout.VERDICT,
            "evaluation": layout.EVALUATION, "report": layout.REPORT, "events": layout.EVENTS,
            "committed": layout.COMMITTED}


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


def load_session(session_dir: str | Path) -> SessionFiles:
    """Read every file of a session folder that exists; never raises for a missing or damaged file."""
    folder = Path(session_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"no session folder {folder}; see `kdsl sessions list`")
    s = SessionFiles(folder=folder, files=_session_files())
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


def verdict_rules(verdict: dict[str, Any] | None) -> list[dict[str, Any]]:
    return [v for v in (verdict or {}).get("rules") or [] if isinstance(v, dict) and "rule_id" in v]



def _saved_test(s: SessionFiles) -> PredictionsOnTest | None:
    """What the evaluate node of a cross-fitted session wrote, when every piece is there; else None."""
    try:
        saved = json.loads((s.folder / "test_predictions.json").read_text(encoding="utf-8"))
        per_rule = {r["id"]: (int(r["test_support"]), int(r["test_correct"]))
                    for r in (s.evaluation or {})["per_rule"]}
        gold, rules, together = list(saved["gold"]), list(saved["rules"]), list(saved["together"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # an older session, or a damaged file: recompute
    accepted, note = s.accepted_ids()
    if not set(accepted) <= set(per_rule) or not len(gold) == len(rules) == len(together):
        return None
    return PredictionsOnTest(gold, rules, together, "the session's decider, under the fitted arbiter",
                             {i: per_rule[i] for i in accepted}, note)


def _recompute_test(s: SessionFiles) -> PredictionsOnTest:
    """The test split's predictions: as the evaluate node wrote them (test_predictions.json, with each rule's test
    hits in evaluation.json), or for an older session recomputed as its evaluate node did: accepted rules ranked by
    their verify Wilson lower bound, where none fires the session decider's label (decider_predictions.json) or,
    without one, the majority label of the search split."""
    saved = _saved_test(s)
    if saved is not None:
        return saved
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
    confidence = {v["rule_id"]: (v.get("stats") or {}).get("precision_lower", 0.0) for v in verdict_rules(s.verdict)}
    rules = [r for r in (s.rules or ()) if r.id in set(accepted)]
    fired = engine.fire_matrix(rules)
    prediction = engine.predict(rules, [confidence.get(r.id, 0.0) for r in rules], fired=fired)
    hits = {r.id: (int(fired[:, j].sum()), sum(1 for i in range(len(ids)) if fired[i, j] and gold[i] == r.label))
            for j, r in enumerate(rules)}
    rule_pred = list(prediction.labels)
    try:
        # A cross-fitted session writes what its arbiter decided on each test sample.
        saved = json.loads((s.folder / "test_predictions.json").read_text(encoding="utf-8"))
        if saved["ids"] == ids:
            return PredictionsOnTest(gold, rule_pred, list(saved["together"]),
                                     "the session's decider, under the fitted arbiter", hits, note)
    except (OSError, ValueError, KeyError, TypeError):
        pass  # an older session: rules first, then its decider or the majority label
    try:
        by_id = json.loads((s.folder / "decider_predictions.json").read_text(encoding="utf-8"))["parts"]["test"]
        return PredictionsOnTest(gold, rule_pred, with_fallback(rule_pred, [by_id[i] for i in ids]),
                                 "the features decider's label", hits, note)
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no session decider (or a damaged file): the majority label, as such sessions were evaluated
    return PredictionsOnTest(gold, rule_pred, with_fallback(rule_pred, [fallback] * len(ids)),
                             f"{fallback!r}, the majority label of the search split", hits, note)
