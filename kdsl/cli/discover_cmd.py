"""`kdsl discover`: run (or resume) a rule discovery session with a live progress display."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.live import Live
from rich.table import Table

from kdsl.cli._edge import console, friendly_errors, os_message
from kdsl.config import Settings
from kdsl.errors import KdslError

SHOWN_RULES = 15  # the best-supported accepted rules printed per task; the report has them all

app = typer.Typer(help="Discover rules: search, verify, commit to memory, evaluate on the sealed test split.")


def _progress_table(p: Any, started: float) -> Table:
    t = Table.grid(padding=(0, 2))
    step = p.step
    t.add_row("iteration", str(step.iteration), "best reward", f"{step.best_reward:.4f}",
              "rules", str(len(p.best_rules)), "tokens", str(step.tokens),
              "elapsed", f"{time.perf_counter() - started:.1f}s")
    return t


def _review(payload: dict[str, Any]) -> list[str]:
    kept = []
    for r in payload["rules"]:
        console.print(f"[bold]{r['id']}[/bold] -> {r['label']}: {r['condition']}  "
                      f"(precision {r['precision']:.2f} on {r['support']})", highlight=False)
        if typer.confirm("keep this rule?", default=True):
            kept.append(r["id"])
    return kept


def _print_outcome(outcome: Any) -> None:
    if outcome.paused:
        console.print(f"session {outcome.session_id} waits for review; run `kdsl discover --resume "
                      f"{outcome.session_id} --review`", highlight=False)
        return
    report = outcome.report
    console.print(f"session [bold]{outcome.session_id}[/bold] -> {outcome.session_dir}", highlight=False)
    for task_report in (report["tasks"].values() if "tasks" in report else [report]):
        _print_task(task_report)


def _print_task(report: dict[str, Any]) -> None:
    task = report["config"]["task"]
    accepted = sorted(report["accepted_rules"], key=lambda r: (-r["support"], r["label"]))
    rules = Table(title=f"{task}: accepted rules ({len(accepted)}), counted on samples their search never saw")
    for col in ("label", "condition", "support", "precision"):
        rules.add_column(col, overflow="fold")
    for r in accepted[:SHOWN_RULES]:
        rules.add_row(r["label"], r["condition"], str(r["support"]), f"{r['precision']:.2f}")
    console.print(rules)
    if len(accepted) > SHOWN_RULES:
        console.print(f"... and {len(accepted) - SHOWN_RULES} more: `kdsl report {report['session_id']}`",
                      highlight=False)
    test = report["test"]
    est = test.get("precision") or {}
    if est.get("estimated") is not None:
        console.print(f"accepted rules, precision where they fire: estimated {est['estimated']:.3f} (cross-fitted, "
                      f"coverage {est['estimated_coverage']:.3f}), realized on test {est['realized']:.3f} "
                      f"(coverage {est['realized_coverage']:.3f})", highlight=False)
    table = Table(title=f"{task}: test split ({test['n']} samples)")
    for col in ("predictor", "coverage", "accuracy", "weighted F1", "macro F1"):
        table.add_column(col)
    for name, key in (("rules alone", "rules"), (f"{test['fallback_name']} alone", "fallback"),
                      (f"rules + {test['fallback_name']}", "rules_with_fallback")):
        s = test[key]
        table.add_row(name, f"{s['coverage']:.3f}", f"{s['accuracy']:.3f}", f"{s['weighted_f1']:.3f}",
                      f"{s['macro_f1']:.3f}")
    if test.get("baseline"):
        s = test["baseline"]
        table.add_row(f"{s['name']} (baseline)", f"{s['coverage']:.3f}", f"{s['accuracy']:.3f}",
                      f"{s['weighted_f1']:.3f}", f"{s['macro_f1']:.3f}")
    console.print(table)
    b = test["bootstrap"]
    console.print(f"weighted F1, together - {test['fallback_name']} alone: {b['delta']:+.4f} (paired 95% CI "
                  f"{b['low']:+.4f} .. {b['high']:+.4f})", highlight=False)
    if test.get("baseline"):
        b = test["baseline"]["together_minus_baseline"]
        console.print(f"weighted F1, together - {test['baseline']['name']}: {b['delta']:+.4f} (paired 95% CI "
                      f"{b['low']:+.4f} .. {b['high']:+.4f})", highlight=False)
    oos = test.get("out_of_scope")
    if oos:
        for name, key in ((f"{test['fallback_name']} alone", "fallback"), ("together", "rules_with_fallback")):
            o = oos[key]
            console.print(f"{name}: in-scope accuracy {o['in_scope_accuracy']:.3f} ({o['n_in_scope']} samples), "
                          f"out-of-scope ({oos['label']}) recall {o['out_of_scope_recall']:.3f} "
                          f"({o['n_out_of_scope']} samples)", highlight=False)
    gain = (report.get("decider") or {}).get("estimated_gain")
    if gain:
        console.print(f"what the rules were expected to add (cross-fitted on the training part): weighted F1 "
                      f"{gain['delta']:+.4f} (95% CI {gain['delta_low']:+.4f} .. {gain['delta_high']:+.4f}), "
                      f"{gain['fixed']} decisions fixed, {gain['broken']} broken"
                      + ("; not shown to help, so the rules explain and the decider decides (--no-gain-check to "
                         "combine anyway)" if gain.get("gated") else ""), highlight=False)


def _config(**fields: Any) -> Any:
    """The session's config, or a one-line error naming the option that is wrong."""
    from pydantic import ValidationError

    from kdsl.graph import SessionConfig

    try:
        return SessionConfig(**fields)
    except ValidationError as e:
        first = e.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        option = "--" + {"test_data": "test"}.get(field, field).replace("_", "-") if field else "an option"
        raise typer.BadParameter(f"{option}: {first['msg'].removeprefix('Value error, ')}") from None


def _resumable(e: OSError | sqlite3.OperationalError, session_id: str, settings: Settings) -> KdslError | None:
    """A file-system error during a session (a full disk, a lost permission; SQLite's "database or disk is full"):
    the error and how to go on from the session's last checkpoint once the cause is fixed. None when the session
    was never started (nothing to resume) or the error is not about the disk."""
    if isinstance(e, sqlite3.OperationalError) and "disk" not in str(e):
        return None
    if not (settings.sessions_dir / session_id).is_dir():
        return None
    reason = os_message(e) if isinstance(e, OSError) else f"the session's checkpoint database: {e}"
    return KdslError(f"{reason}; session {session_id} keeps what it finished: fix that (free space, say), "
                     f"then continue it with `kdsl discover --resume {session_id}`")


@app.command()
@friendly_errors
def discover(
    data: Annotated[Path | None, typer.Option(help="Dataset path.")] = None,
    task: Annotated[str | None, typer.Option(help="Task to discover rules for, e.g. dialogue_intent (default: every "
                                             "task of the data, one child session each, one id for all).")] = None,
    author: Annotated[str, typer.Option(help="'backend:model' (e.g. llama_cpp:qwen2.5-coder-1.5b-instruct), or a "
                                        "model-free author: 'contrast' (label-specific substrings of the search "
                                        "split) or 'ngram' (random substrings); 'none' runs no search (the "
                                        "candidates are the mined terms and --term-author's).")] = "contrast",
    term_author: Annotated[str | None, typer.Option(
        help="A language model (backend:model, e.g. llama_cpp:qwen2.5-coder-1.5b-instruct) asked once for each "
             "label's terms from its name alone (synonyms, page words the samples may lack, a few seconds a label); "
             "the verifier keeps those the data bears out.")] = None,
    strategy: Annotated[str, typer.Option(help="mcts, greedy or random.")] = "mcts",
    iterations: Annotated[int, typer.Option(help="Search iterations, shared out over the folds.")] = 1000,
    budget_seconds: Annotated[float | None, typer.Option(help="Wall-clock budget of the authors: the term "
                                                          "author's calls, then the search.")] = None,
    mined: Annotated[bool, typer.Option(help="Each label's mined terms and its name's terms join the candidates "
                                        "(--no-mined: only the authors' proposals, to measure an author alone).")]
    = True,
    budget_tokens: Annotated[int | None, typer.Option(help="Author token budget.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the split and the search.")] = 0,
    review: Annotated[bool, typer.Option("--review", help="Keep or drop each accepted rule by hand.")] = False,
    no_images: Annotated[bool, typer.Option("--no-images", help="Dialogue text only (no OCR, visual labels).")]
    = False,
    min_support: Annotated[int, typer.Option(help="Verify: least support.")] = 3,
    min_precision_lower: Annotated[float, typer.Option(help="Verify: least precision lower bound (the loosest bar: "
                                                       "see --target-precision).")] = 0.3,
    min_precision: Annotated[float, typer.Option(help="Verify: least precision (the loosest bar: see "
                                                 "--target-precision).")] = 0.75,
    target_precision: Annotated[float, typer.Option(min=0, max=1, help="Verify: tighten the bars step by step "
                                                    "until the accepted rules' precision, estimated on folds their "
                                                    "search never saw, reaches this (0: the bars as given).")]
    = 0.85,
    no_gain_check: Annotated[bool, typer.Option("--no-gain-check", help="Let the rules change decisions even when "
                                                "the cross-fitted data does not show them helping (by default they "
                                                "then only explain).")] = False,
    folds: Annotated[int, typer.Option(min=3, max=20, help="Cross-fitting folds (3 at least): one rule search per "
                                       "fold on the "
                                       "others, verified on it, counts pooled; the decider's out-of-fold "
                                       "predictions come from the same folds.")] = 5,
    decider: Annotated[str, typer.Option(help="What the rules decide with: `features` (the CPU decider, fitted "
                                              "on the search split; rules are sought where it errs) or `majority`.")]
    = "features",
    resume: Annotated[str | None, typer.Option(help="Continue session ID from its last checkpoint.")] = None,
    k_shot: Annotated[int | None, typer.Option("--k-shot", min=1, help="Few-shot: keep at most K labeled search "
                                               "samples per label (the sealed test share stays whole).")] = None,
    split: Annotated[Path | None, typer.Option(help="A split file (`kdsl data split`) instead of drawing one: its "
                                                    "search and verify parts are searched, its test is sealed.")]
    = None,
    test: Annotated[Path | None, typer.Option("--test", help="A separate labeled test file, sealed and read once "
                                              "at the end; then all of --data is searched (with --k-shot: K per "
                                              "label).")] = None,
    oos_label: Annotated[str | None, typer.Option(help="The out-of-scope label, scored apart: in-scope accuracy "
                                                  "and out-of-scope recall (default: a label named oos or "
                                                  "out_of_scope, if any).")] = None,
    text_column: Annotated[str | None, typer.Option(help="A CSV's text column (default: text, sentence, "
                                                    "utterance, query, ... recognised).")] = None,
    label_column: Annotated[str | None, typer.Option(help="A CSV's label column (default: label, intent, "
                                                     "category, ... recognised).")] = None,
    checkpointer: Annotated[str | None, typer.Option(help="Keep the session's checkpoints in PostgreSQL "
                                                     "(postgresql://USER[:PASSWORD]@HOST:PORT/DB; default "
                                                     "KDSL_CHECKPOINTER, else checkpoints.sqlite in the session "
                                                     "folder). The password is not saved: on --resume give the URL "
                                                     "again, or set PGPASSWORD.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="End with the session's scores as one JSON line "
                                          "(what `kdsl eval --session ID --json` prints).")] = False,
) -> None:
    """Run a discovery session: prepare, search, verify, (review), commit, evaluate, report.

    The search split is cut into --folds folds: the decider's out-of-fold predictions, one rule search per fold on
    the others, each rule verified on the folds whose search never saw them (counts pooled), an arbiter fitted on
    those cross-fitted predictions; the sealed test split is read once, at the end.

    Example: kdsl discover --data ../shared/data/www2025-mdsirc            (every task, defaults)
             kdsl discover --data ../shared/data/www2025-mdsirc --task dialogue_intent --iterations 600
             kdsl discover --data train.csv --test test.csv --k-shot 10   (your own files)
    """
    from kdsl.graph import resume_session, run_session
    from kdsl.graph.session import new_session_id

    settings = Settings()
    session_id = resume or new_session_id()
    started = time.perf_counter()
    with Live(console=console, refresh_per_second=4, transient=True) as live:
        def show(progress: Any) -> None:
            live.update(_progress_table(progress, started))

        review_fn = _review if review else None
        if resume is not None:
            live.update(f"resuming session {resume} ...")
            try:
                outcome = resume_session(resume, settings, on_iteration=show, review_fn=review_fn,
                                         checkpointer_url=checkpointer)
            except (OSError, sqlite3.DatabaseError, json.JSONDecodeError) as e:
                disk = isinstance(e, (OSError, sqlite3.OperationalError))
                hint = _resumable(e, session_id, settings) if disk else None  # type: ignore[arg-type]
                if hint is not None:
                    raise hint from e
                if isinstance(e, OSError):
                    raise
                # A damaged checkpoint or progress file: say which session, keep every file as it is.
                raise KdslError(f"session {resume}: a file of the session under {settings.sessions_dir} cannot be "
                                f"read ({type(e).__name__}: {e}), so it cannot resume; its files are left as they "
                                "are (start a new session with `kdsl discover --data ...`)") from e
        else:
            if data is None:
                raise typer.BadParameter("--data is needed (or --resume ID)")
            config = _config(data=data, task=task, author=author, term_author=term_author, mined=mined,
                                   strategy=strategy,
                                   iterations=iterations,
                                   budget_seconds=budget_seconds, budget_tokens=budget_tokens, seed=seed,
                                   review=review, images=not no_images, min_support=min_support,
                                   min_precision_lower=min_precision_lower, min_precision=min_precision,
                                   decider=decider, folds=folds, text_column=text_column,
                                   label_column=label_column, k_shot=k_shot, split=split,
                                   test_data=test, oos_label=oos_label, gain_check=not no_gain_check,
                                   target_precision=target_precision or None,
                                   checkpointer=checkpointer or settings.checkpointer)
            live.update("preparing (load, split, featurize, fit the decider) ...")
            try:
                outcome = run_session(config, settings, on_iteration=show, review_fn=review_fn,
                                      checkpointer_url=checkpointer or settings.checkpointer, session_id=session_id)
            except (OSError, sqlite3.OperationalError) as e:
                hint = _resumable(e, session_id, settings)
                if hint is None:
                    raise
                raise hint from e
    _print_outcome(outcome)
    if as_json and not outcome.paused:
        from kdsl.graph.session_eval import evaluate_session

        print(json.dumps(evaluate_session(outcome.session_id, settings), ensure_ascii=False))
