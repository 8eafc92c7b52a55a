"""`kdsl rules`: check rule files against labeled data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from kdsl.agents.verifier import Verdict, Verifier, VerifierConfig
from kdsl.cli._edge import console, friendly_errors, print_json
from kdsl.config import Settings
from kdsl.data import PARTS, Split, load_dataset
from kdsl.rules import RuleEngine, RuleSet
from kdsl.tools.pipeline import default_builder

app = typer.Typer(help="Check, list and explain rules.", no_args_is_help=True)


def _rule_table(verdict: Verdict) -> Table:
    table = Table(title=f"{len(verdict.rules)} rules on {verdict.split} ({verdict.n_samples} samples)")
    for col, justify in [("rule", "left"), ("label", "left"), ("support", "right"), ("cover", "right"),
                         ("prec", "right"), ("prec lb", "right"), ("recall", "right"), ("overlap", "right"),
                         ("conflict", "right"), ("verdict", "left")]:
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in verdict.rules:
        s = r.stats
        table.add_row(r.rule_id, r.label, str(s.support), f"{s.coverage:.1%}", f"{s.precision:.2f}",
                      f"{s.precision_lower:.2f}", f"{s.recall:.2f}", str(s.overlaps), str(s.conflicts),
                      ("[green]accept[/green] " if r.accepted else "[red]refuse[/red] ") + r.reason)
    return table


def _task_table(verdict: Verdict) -> Table:
    table = Table(title="rule set per task (weighted F1 as in the MDSIRC challenge)")
    for col in ["task", "coverage", "acc. where fired", "rules wF1", "fallback wF1", "rules+fallback wF1",
                "delta [95% CI]"]:
        table.add_column(col, justify="left" if col == "task" else "right")
    for t in verdict.tasks:
        b = t.bootstrap
        ci = f"{b.delta:+.3f} [{b.low:+.3f}, {b.high:+.3f}]" if b else "-"
        table.add_row(t.task, f"{t.rules.coverage:.1%}", f"{t.rules.accuracy_where_fired:.3f}",
                      f"{t.rules.weighted_f1:.3f}", f"{t.fallback.weighted_f1:.3f} ({t.fallback_name})",
                      f"{t.rules_with_fallback.weighted_f1:.3f}", ci)
    return table


@app.command()
@friendly_errors
def check(
    rules_file: Annotated[Path, typer.Argument(help="Rules JSON: {\"rules\": [...]} or a list of rules.")],
    data: Annotated[Path, typer.Option("--data", "-d", help="Labeled dataset (any format kdsl reads).")],
    split: Annotated[Path | None, typer.Option(help="Split file from `kdsl data split`.")] = None,
    part: Annotated[str, typer.Option(help=f"Part of the split to check on: {', '.join(PARTS)}.")] = "verify",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Where to write the statistics (JSON).")] = None,
    min_support: Annotated[int, typer.Option(help="Accept only rules firing on this many samples.")] = 3,
    min_precision: Annotated[float, typer.Option(help="Accept only rules whose precision lower bound is above.")
                             ] = 0.5,
    no_images: Annotated[bool, typer.Option("--no-images", help="Skip OCR and visual labels.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the statistics as JSON instead of tables.")] = False,
) -> None:
    """Score every rule (support, coverage, precision and its Wilson lower bound, recall, overlaps, conflicts)
    and the rule set per task (alone and completed by the majority label, with a paired bootstrap CI).

    Example: kdsl rules check examples/rules/mdsirc_image_scene.json --data ../shared/data/www2025-mdsirc
    --split runs/mdsirc-split.json --part verify --out runs/mdsirc-rules-check.json
    """
    rules = RuleSet.load(rules_file)
    dataset = load_dataset(data)
    split_name = "all"
    if split is not None:
        if part not in PARTS:
            raise typer.BadParameter(f"--part must be one of {', '.join(PARTS)}, got {part!r}")
        the_split = Split.load(split)
        the_split.check(dataset)
        dataset = dataset.subset(the_split.ids(part))  # type: ignore[arg-type]
        split_name = f"{split.name}:{part}"
    tasks = {r.task for r in rules}
    samples = [s for s in dataset.samples if s.task in tasks]
    if not samples:
        raise typer.BadParameter(f"no samples of the rules' tasks ({', '.join(sorted(tasks))}) in {data}")
    builder = default_builder(Settings(), images=not no_images)
    table = builder.build(samples)
    engine = RuleEngine(table.rows(s.id for s in samples), [s.task for s in samples])
    verifier = Verifier(VerifierConfig(min_support=min_support, min_precision_lower=min_precision))
    verdict = verifier.check(rules, engine, [s.label for s in samples], split=split_name)
    out = out or Path("runs") / f"{rules_file.stem}-check.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(verdict.model_dump_json(indent=1), encoding="utf-8")
    if as_json:
        print_json(verdict)
        return
    console.print(_rule_table(verdict))
    console.print(_task_table(verdict))
    console.print(f"{len(verdict.accepted)}/{len(verdict.rules)} rules accepted; statistics -> {out}")
