"""`kdsl data`: look at a dataset and split it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.table import Table

from kdsl.cli._edge import bad_option, check_output, console, friendly_errors, print_json
from kdsl.data import Split, SplitConfig, load_dataset, split_dataset, summarize

app = typer.Typer(help="Inspect and split datasets.", no_args_is_help=True)

DataPath = Annotated[Path, typer.Argument(help="An MDSIRC folder, Banking77 folder, CLINC150 json, .jsonl or .csv.")]
SkipInvalid = Annotated[
    bool, typer.Option("--skip-invalid", help="Skip bad items and count them by reason instead of stopping.")
]


@app.command()
@friendly_errors
def inspect(
    path: DataPath,
    skip_invalid: SkipInvalid = False,
    all_labels: Annotated[bool, typer.Option("--all", help="List every label, not only the 25 most frequent.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    text_column: Annotated[str | None, typer.Option(help="A CSV's text column (default: recognised by name).")]
    = None,
    label_column: Annotated[str | None, typer.Option(help="A CSV's label column (default: recognised by name).")]
    = None,
) -> None:
    """Tasks, label counts, images and refused items of a dataset.

    Example: kdsl data inspect ../shared/data/www2025-mdsirc
    """
    summary = summarize(load_dataset(path, skip_invalid=skip_invalid, text_column=text_column,
                                     label_column=label_column))
    if as_json:
        print_json(summary)
        return
    console.print(f"[bold]{summary.name}[/bold]  {summary.samples} samples, {len(summary.tasks)} task(s), "
                  f"{summary.images} images  (fingerprint {summary.fingerprint})")
    for key, counts in summary.meta_counts.items():
        console.print(f"  {key}: " + ", ".join(f"{v}: {n}" for v, n in counts.items()))
    for t in summary.tasks:
        console.print(f"\n[bold]{t.task}[/bold]: {t.samples} samples, {t.labels_seen}/{t.labels_in_space} labels "
                      f"seen, {t.samples_with_images} with images, {t.turns_mean:.1f} turns on average")
        table = Table()
        table.add_column("label")
        table.add_column("samples", justify="right")
        table.add_column("share", justify="right")
        items = list(t.label_counts.items())
        for label, n in items if all_labels else items[:25]:
            table.add_row(label, str(n), f"{n / max(t.labeled, 1):.1%}")
        if not all_labels and len(items) > 25:
            table.add_row(f"... {len(items) - 25} more (--all)", "", "")
        console.print(table)
    if summary.invalid:
        console.print("[yellow]skipped invalid items:[/yellow] "
                      + ", ".join(f"{code}: {n}" for code, n in summary.invalid.items()))


@app.command()
@friendly_errors
def split(
    path: DataPath,
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the split (JSON id lists).")] = Path(
        "split.json"),
    search: Annotated[float, typer.Option(help="Share for rule search and decider training.")] = 0.6,
    verify: Annotated[float, typer.Option(help="Share for accepting rules.")] = 0.2,
    test: Annotated[float, typer.Option(help="Sealed share for the final evaluation.")] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed of the shuffle.")] = 0,
    k_shot: Annotated[int | None, typer.Option("--k-shot", help="Keep at most K samples per label in search.")
                      ] = None,
    skip_invalid: SkipInvalid = False,
) -> None:
    """Split a dataset into search / verify / test, stratified by task and label, and save the ids.

    Example: kdsl data split ../shared/data/www2025-mdsirc --out runs/mdsirc-split.json --seed 0
    Few-shot: add --k-shot 5 to keep 5 samples per label for search (verify and test stay as they are).
    """
    check_output(out)
    try:
        config = SplitConfig(search=search, verify=verify, test=test, seed=seed, k_shot=k_shot)
    except ValidationError as e:
        raise bad_option(e) from None
    dataset = load_dataset(path, skip_invalid=skip_invalid)
    result: Split = split_dataset(dataset, config)
    result.save(out)
    table = Table(title=f"split of {dataset.name} (seed {seed}) -> {out}")
    table.add_column("task")
    for part in ("search", "verify", "test"):
        table.add_column(part, justify="right")
    for task in dataset.tasks:
        ids = {s.id for s in dataset.samples if s.task == task}
        table.add_row(task, *(str(len(ids.intersection(result.ids(p)))) for p in ("search", "verify", "test")))
    console.print(table)
