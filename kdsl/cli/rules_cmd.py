"""`kdsl rules`: check rule files against labeled data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.table import Table

from kdsl._internal._atomic import write_text_atomic
from kdsl.agents.verifier import Verdict, Verifier, VerifierConfig
from kdsl.cli._edge import bad_option, check_output, console, err_console, friendly_errors, print_json
from kdsl.config import Settings
from kdsl.data import PARTS, Split, load_dataset
from kdsl.errors import DataError, RuleSyntaxError
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


def _check_labels(rules: RuleSet, label_spaces: dict, rules_file: Path, data: Path) -> None:
    """Refuse a rule whose label is not in its task's label space in the data: it could only ever be wrong, and
    its statistics would say nothing. (Rules of a task the data lacks fire on nothing and are refused for support.)"""
    for i, r in enumerate(rules):
        labels = label_spaces.get(r.task)
        if labels is not None and r.label not in labels:
            shown = ", ".join(list(labels)[:10]) + (", ..." if len(labels) > 10 else "")
            raise RuleSyntaxError(f"{rules_file}: rule #{i} ({r.id}): label {r.label!r} is not in task {r.task!r}'s "
                                  f"label space ({len(labels)} labels: {shown})")


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
    commit: Annotated[bool, typer.Option("--commit", help="Store the accepted rules, with these statistics, in "
                                         "the rule memory.")] = False,
    memory: Annotated[Path | None, typer.Option("--memory", help="Memory folder (default: the Chroma server "
                                                "KDSL_MEMORY_URL names, else KDSL_HOME/memory).",
                                                show_default=False)] = None,
) -> None:
    """Score every rule (support, coverage, precision and its Wilson lower bound, recall, overlaps, conflicts)
    and the rule set per task (alone and completed by the majority label, with a paired bootstrap CI).

    Example: kdsl rules check examples/rules/mdsirc_image_scene.json --data ../shared/data/www2025-mdsirc
    --split runs/mdsirc-split.json --part verify --out runs/mdsirc-rules-check.json
    """
    out = check_output(out or Path("runs") / f"{rules_file.stem}-check.json")
    try:
        config = VerifierConfig(min_support=min_support, min_precision_lower=min_precision)
    except ValidationError as e:
        raise bad_option(e, {"min_precision_lower": "--min-precision"}) from None
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
    _check_labels(rules, dataset.label_spaces, rules_file, data)
    tasks = {r.task for r in rules}
    samples = [s for s in dataset.samples if s.task in tasks]
    if not samples:
        raise typer.BadParameter(f"no samples of the rules' tasks ({', '.join(sorted(tasks))}) in {data}")
    builder = default_builder(Settings(), images=not no_images)
    table = builder.build(samples)
    engine = RuleEngine(table.rows(s.id for s in samples), [s.task for s in samples])
    verifier = Verifier(config)
    verdict = verifier.check(rules, engine, [s.label for s in samples], split=split_name)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, verdict.model_dump_json(indent=1))
    if commit:
        by_id = {r.id: r for r in rules}
        with _memory(memory) as mem:
            written = [mem.add(by_id[v.rule_id].model_copy(update={"status": "accepted", "stats": v.stats}))
                       for v in verdict.rules if v.accepted]
        console.print(f"memory: {len(written)} accepted rule(s) written "
                      f"({', '.join(f'{w.rule_id} {w.action}' for w in written) or 'none'})", highlight=False)
    if as_json:
        print_json(verdict)
        return
    console.print(_rule_table(verdict))
    console.print(_task_table(verdict))
    console.print(f"{len(verdict.accepted)}/{len(verdict.rules)} rules accepted; statistics -> {out}")


# -- the rule memory ------------------------------------------------------------------------------------------------
MemoryPath = Annotated[
    Path | None, typer.Option("--memory", help="Memory folder (default: the Chroma server KDSL_MEMORY_URL names, else "
                                        "KDSL_HOME/memory).", show_default=False)
]
TaskOpt = Annotated[str | None, typer.Option(help="Only rules of this task.")]
LabelOpt = Annotated[str | None, typer.Option(help="Only rules of this label.")]
StatusOpt = Annotated[str | None, typer.Option(help="candidate, accepted or retired (default: not retired).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _memory(path: Path | None):
    from kdsl.memory import RuleMemory  # chromadb loads only for the commands that need it

    return RuleMemory.open(path)  # a folder, or the server KDSL_MEMORY_URL names


def _status(status: str | None):
    from kdsl.memory.store import LIVE

    if status is None:
        return LIVE
    if status not in ("candidate", "accepted", "retired", "all"):
        raise typer.BadParameter(f"--status must be candidate, accepted, retired or all, got {status!r}")
    return None if status == "all" else status


def _memory_table(rules, title: str, scores: list[float] | None = None) -> Table:
    table = Table(title=title)
    table.add_column("rule", overflow="fold")
    table.add_column("task / label", overflow="fold")
    table.add_column("status", overflow="fold")
    table.add_column("support, prec lb", overflow="fold")
    if scores:
        table.add_column("score")
    table.add_column("statement / condition", ratio=1, min_width=20)
    for i, r in enumerate(rules):
        s = r.stats
        row = [r.id, f"{r.task}\n{r.label}", f"{r.status} v{r.version}",
               f"{s.support}, {s.precision_lower:.2f}" if s else "-"]
        if scores:
            row.append(f"{scores[i]:.3f}")
        table.add_row(*row, (r.statement + "\n" if r.statement else "") + r.when.render())
    return table


@app.command("list")
@friendly_errors
def list_rules(
    task: TaskOpt = None, label: LabelOpt = None, status: StatusOpt = None,
    min_precision: Annotated[float | None, typer.Option(help="Minimum precision.")] = None,
    min_support: Annotated[int | None, typer.Option(help="Minimum support.")] = None,
    memory: MemoryPath = None, as_json: AsJson = False,
) -> None:
    """List the rules in memory, most confident first.

    Example: kdsl rules list --task image_scene --status accepted --min-precision 0.9
    """
    with _memory(memory) as mem:
        rules = mem.list(task=task, label=label, status=_status(status), min_precision=min_precision,
                         min_support=min_support)
    if as_json:
        print_json([r.model_dump(mode="json", by_alias=True) for r in rules])
        return
    console.print(_memory_table(rules, f"{len(rules)} rule(s)"))


@app.command()
@friendly_errors
def search(
    text: Annotated[str, typer.Argument(help="What the rules should be about, in any language.")],
    k: Annotated[int, typer.Option("-k", min=1, help="How many rules.")] = 5,
    task: TaskOpt = None, label: LabelOpt = None, status: StatusOpt = None,
    memory: MemoryPath = None, as_json: AsJson = False,
) -> None:
    """Find rules by meaning (multilingual e5 embeddings of statement and condition).

    Example: kdsl rules search "用户问退款进度" --task image_scene -k 5
    """
    if not text.strip():
        raise typer.BadParameter("TEXT is empty: say what the rules should be about")
    with _memory(memory) as mem:
        hits = mem.search(text, k, task=task, label=label, status=_status(status))
    if as_json:
        print_json([h.model_dump(mode="json", by_alias=True) for h in hits])
        return
    console.print(_memory_table([h.rule for h in hits], f"{len(hits)} rule(s) for {text!r}",
                                scores=[h.score for h in hits]))


@app.command()
@friendly_errors
def show(
    rule_id: Annotated[str, typer.Argument(help="Rule id.")],
    memory: MemoryPath = None,
) -> None:
    """Show one rule: its JSON, where its statistics come from, and its versions.

    Example: kdsl rules show r-4552d8c0f9
    """
    with _memory(memory) as mem:
        record = mem.record(rule_id)
        lineage = mem.lineage(rule_id)
    print_json(record)
    console.print("lineage: " + " -> ".join(f"{r.id} (v{r.version}, {r.status})" for r in lineage))


@app.command()
@friendly_errors
def explain(
    sample_id: Annotated[str, typer.Argument(help="Id of a sample in --data.")],
    data: Annotated[Path, typer.Option("--data", "-d", help="Dataset holding the sample.")],
    memory: MemoryPath = None,
) -> None:
    """Which accepted rules fire on this sample, and which of their terms matched.

    Example: kdsl rules explain 213e438b17282904772446704d0b28 --data ../shared/data/www2025-mdsirc
    """
    from kdsl.rules import matched_leaves, normalize
    from kdsl.tools.features import FIELDS

    dataset = load_dataset(data)
    try:
        sample = dataset.get(sample_id)
    except KeyError as e:
        raise DataError(f"{e.args[0]}; `kdsl data inspect {data}` shows the data", path=str(data)) from None
    (features,) = default_builder(Settings(), progress=False).build([sample]).rows([sample.id])
    with _memory(memory) as mem:
        fired = mem.fire_on(features, sample.task)
    console.print(f"sample {sample.id} ({sample.task}), gold label: {sample.label}")
    fields = {name: normalize(features.field(name)) for name in FIELDS}
    for r in fired:
        s = r.stats
        console.print(f"[bold]{r.label}[/bold] by {r.id}"
                      + (f" (precision {s.precision:.2f}, lower bound {s.precision_lower:.2f}, support {s.support})"
                         if s else ""))
        console.print(f"  {r.statement}" if r.statement else "", highlight=False)
        for why in matched_leaves(r.when, fields):
            console.print(f"  matched: {why}", highlight=False)
    if not fired:
        console.print("no accepted rule fires on this sample")


@app.command()
@friendly_errors
def retire(rule_id: Annotated[str, typer.Argument(help="Rule id.")], memory: MemoryPath = None) -> None:
    """Retire a rule: it stays in memory with its history but no longer fires.

    Example: kdsl rules retire r-4552d8c0f9
    """
    with _memory(memory) as mem:
        rule = mem.retire(rule_id)
    console.print(f"retired {rule.id} (v{rule.version})")


@app.command("export")
@friendly_errors
def export_rules(
    path: Annotated[Path, typer.Argument(help="Rules JSON file to write.")],
    task: TaskOpt = None, status: StatusOpt = None, memory: MemoryPath = None,
) -> None:
    """Write rules from memory to a rules JSON file (the format `kdsl rules check` reads).

    Example: kdsl rules export runs/accepted.json --status accepted
    """
    check_output(path, "")
    with _memory(memory) as mem:
        out = mem.export(path, task=task, status=_status(status))
    console.print(f"wrote {len(RuleSet.load(out))} rule(s) -> {out}")


@app.command("import")
@friendly_errors
def import_rules(
    path: Annotated[Path, typer.Argument(help="Rules JSON file.")],
    data: Annotated[Path | None, typer.Option("--data", "-d", help="A labeled dataset whose label spaces the rules "
                                              "must fit (a rule of a label the task lacks is refused).")] = None,
    memory: MemoryPath = None,
) -> None:
    """Add the rules of a rules JSON file to memory (deduplicated: equivalent rules merge). With --data, a rule
    whose label or task the data lacks is refused before anything is stored.

    Example: kdsl rules import examples/rules/mdsirc_image_scene.json --data ../shared/data/www2025-mdsirc
    """
    rules = RuleSet.load(path)
    if data is not None:
        label_spaces = load_dataset(data).label_spaces
        for i, r in enumerate(rules):
            if r.task not in label_spaces:
                raise RuleSyntaxError(f"{path}: rule #{i} ({r.id}): task {r.task!r} is not in {data} (its tasks: "
                                      f"{', '.join(label_spaces)})")
        _check_labels(rules, label_spaces, path, data)
    with _memory(memory) as mem:
        results = mem.import_(path)
    unmeasured = [r.id for r in rules if r.status == "accepted" and r.stats is None]
    if data is None:
        err_console.print(f"[yellow]warning:[/yellow] the labels of {len(rules)} rule(s) were not checked against "
                          "any data; `kdsl rules import FILE --data DATA` refuses labels a task lacks",
                          highlight=False, soft_wrap=True)
    if unmeasured:
        err_console.print(f"[yellow]warning:[/yellow] {len(unmeasured)} rule(s) marked accepted without statistics "
                          f"({', '.join(unmeasured[:5])}{', ...' if len(unmeasured) > 5 else ''}): nothing checked "
                          f"their labels or precision; `kdsl rules check {path} --data DATA --commit` does",
                          highlight=False, soft_wrap=True)
    counts: dict[str, int] = {}
    for r in results:
        counts[r.action] = counts.get(r.action, 0) + 1
    console.print(f"{len(results)} rule(s) from {path}: " + ", ".join(f"{a} {n}" for a, n in counts.items()))
