"""A finished session scored as one model: the decider alone, the accepted rules alone and the two together, per
task and overall (the mean of the tasks, as the MDSIRC challenge scores), on its sealed test split or on any
labeled file. What `kdsl eval --session ID [--test FILE] --json` prints."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from kdsl.config import Settings, resolve_session
from kdsl.errors import ConfigError
from kdsl.graph.layout import DECIDER_DIR, EVALUATION, read_json
from kdsl.rules import find_oos_label, out_of_scope_scores, score

MODES = ("decider", "rules", "together")
METRICS = ("weighted_f1", "macro_f1", "accuracy", "coverage", "precision_where_fired")


def _metrics(scores: dict[str, Any]) -> dict[str, float]:
    return {"weighted_f1": scores["weighted_f1"], "macro_f1": scores["macro_f1"], "accuracy": scores["accuracy"],
            "coverage": scores["coverage"], "precision_where_fired": scores["accuracy_where_fired"]}


def _oos_metrics(scores: dict[str, Any]) -> dict[str, Any]:
    return {k: scores[k] for k in ("n_in_scope", "n_out_of_scope", "in_scope_accuracy", "out_of_scope_recall",
                                   "out_of_scope_precision")}


def session_folders(session_id: str, settings: Settings) -> dict[str, Path]:
    """Task -> the folder of the session that discovered its rules (the children of a group session)."""
    folder = settings.sessions_dir / session_id
    if not (folder / "config.json").is_file():
        known = sorted(p.name for p in settings.sessions_dir.glob("*") if (p / "config.json").is_file()) \
            if settings.sessions_dir.is_dir() else []
        raise ConfigError(f"no session {session_id!r} under {settings.sessions_dir}; known: "
                          f"{', '.join(known[-5:]) or 'none yet, run `kdsl discover`'}")
    head = read_json(folder / "config.json")
    if "children" in head:
        return {t: settings.sessions_dir / c for t, c in head["children"].items()}
    return {head["config"]["task"]: folder}


def _overall(tasks: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    return {m: {k: float(np.mean([t[m][k] for t in tasks.values()])) for k in METRICS} for m in MODES}


def evaluate_session(session_id: str, settings: Settings | None = None, *, test: Path | None = None,
                     progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """The session's scores: on its sealed test split (read from each task's evaluation.json), or on a labeled
    file (predicted by the session's decider, rules and fitted arbiter, as `kdsl serve --session` would)."""
    settings = settings or Settings()
    session_id = resolve_session(session_id, settings)
    folders = session_folders(session_id, settings)
    tasks: dict[str, dict[str, Any]] = {}
    if test is None:
        for task, folder in folders.items():
            path = folder / EVALUATION
            if not path.is_file():
                raise ConfigError(f"session {folder.name} has not evaluated yet (no {EVALUATION}); finish it with "
                                  f"`kdsl discover --resume {session_id}`")
            ev = read_json(path)
            tasks[task] = {"n": ev["n"], "decider": _metrics(ev["fallback"]), "rules": _metrics(ev["rules"]),
                           "together": _metrics(ev["rules_with_fallback"])}
            if ev.get("precision"):
                tasks[task]["estimated_precision"] = ev["precision"]
            if ev.get("out_of_scope"):
                oos = ev["out_of_scope"]
                tasks[task]["out_of_scope"] = {"label": oos["label"], **{
                    m: _oos_metrics(oos[key]) for m, key in (("decider", "fallback"), ("rules", "rules"),
                                                             ("together", "rules_with_fallback"))}}
        part = "sealed test split"
    else:
        tasks = _score_file(session_id, settings, test, progress)
        part = str(test)
    return {"session": session_id, "part": part, "n": sum(t["n"] for t in tasks.values()), "tasks": tasks,
            "overall": _overall(tasks)}


def _score_file(session_id: str, settings: Settings, test: Path, progress: Callable[[int], None] | None
                ) -> dict[str, dict[str, Any]]:
    from kdsl.agents.predictor import Predictor
    from kdsl.data import load_dataset

    folder = settings.sessions_dir / session_id / DECIDER_DIR
    if not folder.is_dir():
        raise ConfigError(f"session {session_id} has no decider to predict with (it ran with `--decider majority`)")
    data = load_dataset(test)
    given = read_json(settings.sessions_dir / session_id / "config.json")["config"].get("oos_label")
    with Predictor.load(folder, settings, policy="stacked") as predictor:
        unknown = sorted(set(data.tasks) - set(predictor.tasks))
        if unknown:
            raise ConfigError(f"{test}: task {unknown[0]!r} is not one session {session_id} learned "
                              f"({', '.join(predictor.tasks)})")
        samples = [s for s in data.samples if s.label is not None]
        decisions = predictor.predict(samples, progress=progress)
    tasks: dict[str, dict[str, Any]] = {}
    for task in dict.fromkeys(s.task for s in samples):
        rows = [(s, d) for s, d in zip(samples, decisions, strict=True) if s.task == task]
        gold = [str(s.label) for s, _ in rows]
        preds = {"decider": [d.decider_top[0][0] if d.decider_top else None for _, d in rows],
                 "rules": [d.fired_rules[0].label if d.fired_rules else None for _, d in rows],
                 "together": [d.label for _, d in rows]}
        tasks[task] = {"n": len(rows), **{m: _metrics(score(gold, p).model_dump()) for m, p in preds.items()}}
        labels = data.label_spaces[task]
        oos = find_oos_label(labels, given if given in labels else None)
        if oos is not None:
            tasks[task]["out_of_scope"] = {"label": oos, **{
                m: _oos_metrics(out_of_scope_scores(gold, p, oos).model_dump()) for m, p in preds.items()}}
    return tasks
