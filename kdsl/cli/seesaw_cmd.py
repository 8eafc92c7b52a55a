"""`kdsl seesaw`: joint vs per-task deciders on each task, and whether the rules recover the difference."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from kdsl.cli._edge import console, friendly_errors, print_json
from kdsl.cli.eval_cmd import load_rules
from kdsl.cli.train_cmd import ensure_pack, progress_bar
from kdsl.config import Settings
from kdsl.training.config import DEFAULT_BASE

app = typer.Typer(help="The seesaw: one joint decider vs one per task, same budget and seed.")


@app.command()
@friendly_errors
def seesaw(
    data: Annotated[Path, typer.Option(help="A dataset with at least two tasks (MDSIRC).")],
    kind: Annotated[str, typer.Option(help="Decider kind: `lora` (the paper's seesaw: one LLM, shared weights) or "
                                           "`features` (a head per task: no seesaw by construction).")] = "lora",
    model: Annotated[str, typer.Option(help="lora: base model of every decider.")] = DEFAULT_BASE,
    epochs: Annotated[float, typer.Option(help="Passes over each decider's search samples.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Seed of the split and the training.")] = 0,
    rules: Annotated[list[Path] | None, typer.Option(help="Rules JSON file(s); default: accepted rules in memory.")]
    = None,
    no_images: Annotated[bool, typer.Option("--no-images", help="Dialogue text only.")] = False,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads (1 is faster on a busy machine).")] = None,
    out: Annotated[Path | None, typer.Option(help="Write the report JSON here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON report.")] = False,
) -> None:
    """Train (or reuse) a joint decider and one per task with the same config; print each task's weighted F1.

    Deciders already trained with the same config on the same data are reused, so a second run only evaluates.
    Example: kdsl seesaw --data ../shared/data/www2025-mdsirc
    """
    from kdsl.agents.feature_decider import FeatureDeciderConfig
    from kdsl.training.config import TrainConfig
    from kdsl.training.seesaw import run_seesaw

    settings = Settings()
    if kind not in ("lora", "features"):
        raise typer.BadParameter(f"unknown decider kind {kind!r}; kinds: lora, features")
    config: TrainConfig | FeatureDeciderConfig
    if kind == "features":
        config = FeatureDeciderConfig(seed=seed)
    else:
        ensure_pack(model, settings)
        config = TrainConfig(base_model=model, epochs=epochs, seed=seed, threads=threads)
    tasks = ["dialogue_intent", "image_scene"]
    rule_set, source = load_rules(rules, tasks, settings, use_memory=True)
    with progress_bar() as bar:
        job = bar.add_task("seesaw", total=None, info="")

        def on_step(step: int, total: int, loss: float) -> None:
            bar.update(job, total=total, completed=step, info=f"loss {loss:.3f}")

        def on_stage(stage: str) -> None:
            # A line per stage too: the bar alone leaves nothing in a log when output is not a terminal.
            console.log(f"seesaw: {stage}", highlight=False)
            bar.update(job, description=stage, completed=0, total=None)

        report = run_seesaw(data, settings, config, rule_set, seed=seed, images=not no_images, on_stage=on_stage,
                            on_step=on_step, progress=lambda n: bar.update(job, info="scoring"))
    if out is not None:
        out.write_text(json.dumps(report.model_dump(mode="json"), ensure_ascii=False, indent=1), encoding="utf-8")
    if as_json:
        print_json(report)
        return
    table = Table(title=f"seesaw on {data} (weighted F1 on test; rules: {source})")
    for col in ("task", "n", "per-task decider", "joint decider", "joint - per-task", "95% CI", "joint + rules",
                "rules recover?"):
        table.add_column(col)
    for r in report.rows:
        b = r.bootstrap
        table.add_row(r.task, str(r.n_test), f"{r.per_task:.4f}", f"{r.joint:.4f}", f"{r.delta:+.4f}",
                      f"[{b.low:+.4f}, {b.high:+.4f}]", f"{r.joint_with_rules:.4f}", "yes" if r.recovered else "no")
    console.print(table)
    for name, folder in report.deciders.items():
        console.print(f"  {name}: {folder}", highlight=False)
