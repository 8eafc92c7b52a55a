"""`kdsl eval`: decider alone, rules alone and together (each policy), with confidence intervals."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from kdsl.cli._edge import console, err_console, friendly_errors, print_json
from kdsl.cli.train_cmd import progress_bar
from kdsl.config import Settings

app = typer.Typer(help="Evaluate a trained decider with rules on the sealed test split or on a labeled file.")


def load_rules(files: list[Path] | None, tasks: list[str], settings: Settings, use_memory: bool):
    """Rules from files, else the accepted rules of the rule memory for these tasks."""
    from kdsl.rules import RuleSet

    if files:
        rules = [r for f in files for r in RuleSet.load(f).rules]
        return RuleSet(rules=tuple({r.id: r for r in rules}.values())), ", ".join(str(f) for f in files)
    if not use_memory:
        return RuleSet(), "none"
    from kdsl.memory import RuleMemory

    with RuleMemory.open(settings=settings) as memory:
        rules = [r for t in tasks for r in memory.list(task=t, status="accepted")]
    return RuleSet(rules=tuple(rules)), f"rule memory ({len(rules)} accepted)"


def _eval_session(session: str, test: Path | None, as_json: bool) -> None:
    from kdsl.graph.session_eval import MODES, evaluate_session

    result = evaluate_session(session, Settings(), test=test)
    if as_json:
        print(json.dumps(result, ensure_ascii=False))
        return
    table = Table(title=f"session {session} on {result['part']} ({result['n']} samples)")
    for col in ("task", "mode", "weighted F1", "macro F1", "accuracy", "coverage", "precision where fired"):
        table.add_column(col)
    for task, t in [*result["tasks"].items(), ("overall", result["overall"])]:
        for mode in MODES:
            m = t[mode]
            table.add_row(task, mode, *(f"{m[k]:.3f}" for k in ("weighted_f1", "macro_f1", "accuracy", "coverage",
                                                                   "precision_where_fired")))
    console.print(table)
    for task, t in result["tasks"].items():
        est = t.get("estimated_precision")
        if est and est.get("estimated") is not None:
            console.print(f"{task}: rules' precision where they fire, estimated {est['estimated']:.3f} "
                          f"(cross-fitted) vs realized {est['realized']:.3f}", highlight=False)
        oos = t.get("out_of_scope")
        for mode in MODES if oos else ():
            o = oos[mode]
            console.print(f"{task}, {mode}: in-scope accuracy {o['in_scope_accuracy']:.3f} ({o['n_in_scope']}), "
                          f"out-of-scope ({oos['label']}) recall {o['out_of_scope_recall']:.3f} "
                          f"({o['n_out_of_scope']})", highlight=False)


@app.command("eval")
@friendly_errors
def eval_(
    decider: Annotated[str | None, typer.Option(help="Decider name (see KDSL_HOME/deciders) or folder.")] = None,
    session: Annotated[str | None, typer.Option(help="A discovery session's id: its decider, accepted rules and "
                                                     "fitted arbiter, scored as one model.")] = None,
    rules: Annotated[list[Path] | None, typer.Option(help="Rules JSON file(s); default: the accepted rules in "
                                                          "the rule memory.")] = None,
    no_memory: Annotated[bool, typer.Option("--no-memory", help="Without --rules, use no rules at all.")] = False,
    test: Annotated[Path | None, typer.Option(help="A labeled file to score instead of the sealed test split.")]
    = None,
    out: Annotated[Path | None, typer.Option(help="Folder for evaluation.json and evaluation.md.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON report.")] = False,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads (1 is faster on a busy machine).")] = None,
) -> None:
    """Score the decider alone, the rules alone and both together under each arbiter policy.

    Rule confidences and the stacked arbiter come from the verify split the decider was calibrated on; the test
    split was never seen in training or search. Example: kdsl eval --decider all-qwen2.5-coder-0.5b-instruct-...

    With --session ID: the session's decider alone, its accepted rules alone and the two together, per task and
    overall (mean of the tasks), on its sealed test split or on --test FILE. Example: kdsl eval --session ID --json
    """
    if session is not None:
        _eval_session(session, test, as_json)
        return
    if decider is None:
        raise typer.BadParameter("give --decider NAME or --session ID")
    from kdsl.agents.decider import decider_folder
    from kdsl.agents.evaluation_report import render_markdown
    from kdsl.data import load_dataset
    from kdsl.training.workflow import build_features, evaluate_decider, load_trained

    settings = Settings()
    folder = decider_folder(decider, settings)
    console.print("loading the decider and its data ...")
    model, prepared = load_trained(folder, settings, progress=not as_json, threads=threads)
    rule_set, source = load_rules(rules, list(model.card.tasks), settings, use_memory=not no_memory)
    if not rule_set.rules:
        err_console.print("[yellow]note:[/yellow] no rules given and none accepted in the rule memory: "
                          "'together' equals the decider alone (see kdsl discover, kdsl rules check --commit)")
    test_data = test_features = None
    if test is not None:
        test_data = load_dataset(test)
        unknown = sorted(set(test_data.tasks) - set(model.card.tasks))
        if unknown:
            raise typer.BadParameter(f"{test}: task {unknown[0]!r} is not one the decider was trained on "
                                     f"({', '.join(model.card.tasks)})")
        test_features = build_features(test_data, settings, images=bool(model.card.training.get("images", True)),
                                       progress=not as_json)
    n_scored = len(prepared.split.verify) + (len(test_data) if test_data else len(prepared.split.test))
    with progress_bar() as bar:
        job = bar.add_task("scoring", total=n_scored, info="")
        report = evaluate_decider(model, prepared, rule_set, test=test_data, test_features=test_features,
                                  progress=lambda n: bar.update(job, advance=n))
    target = out or folder / "evaluations" / time.strftime("%Y%m%d-%H%M%S")
    target.mkdir(parents=True, exist_ok=True)
    (target / "evaluation.json").write_text(json.dumps(report.model_dump(mode="json"), ensure_ascii=False, indent=1),
                                            encoding="utf-8")
    (target / "evaluation.md").write_text(render_markdown(report), encoding="utf-8")
    if as_json:
        print_json(report)
        return
    tasks = list(report.n)
    table = Table(title=f"weighted F1 on {report.part} ({', '.join(f'{t} {report.n[t]}' for t in tasks)}); "
                        f"rules: {source}")
    for col in ("mode", *tasks, "overall"):
        table.add_column(col)
    for mode in report.modes:
        table.add_row(mode, *(f"{report.result(mode, t).scores.weighted_f1:.4f}" for t in tasks),
                      f"{report.overall[mode]:.4f}")
    console.print(table)
    for c in report.comparisons:
        if c.b == "decider":
            b = c.bootstrap
            console.print(f"{c.task}: {c.a} - decider = {b.delta:+.4f} (95% CI {b.low:+.4f} .. {b.high:+.4f})",
                          highlight=False)
    console.print(f"report: {target / 'evaluation.md'} (JSON beside it)", highlight=False)
