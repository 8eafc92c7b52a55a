"""`kdsl train`: LoRA post-training of the decider on the search split, calibration on verify."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from kdsl.cli._edge import console, friendly_errors
from kdsl.config import Settings
from kdsl.training.config import DEFAULT_BASE

app = typer.Typer(help="Post-train the decider (LoRA) on the search split and calibrate it on verify.")


def progress_bar() -> Progress:
    return Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(), console=console)


def ensure_pack(model: str, settings: Settings) -> None:
    """Pull a registry pack the first time it is used, so defaults work on a fresh machine."""
    from kdsl.models import PACKS, list_packs, pull

    if model in PACKS and not any(p.name == model and p.pulled for p in list_packs(settings)):
        console.print(f"pulling model pack {model} (once) ...", highlight=False)
        pull(model, settings)


def default_name(tasks: list[str] | None, model: str) -> str:
    stem = re.sub(r"[^\w.-]+", "-", Path(model).name)[:40]
    return f"{'+'.join(tasks) if tasks else 'all'}-{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


@app.command()
@friendly_errors
def train(
    data: Annotated[Path, typer.Option(help="Dataset path (MDSIRC folder, JSONL, CSV ...).")],
    task: Annotated[list[str] | None, typer.Option(help="Task(s) to train on; repeat for several. Default: all "
                                                        "(one joint decider).")] = None,
    model: Annotated[str, typer.Option(help="Base model: a pack, a transformers folder, a .gguf or an HF id.")]
    = DEFAULT_BASE,
    name: Annotated[str | None, typer.Option(help="Decider name (folder under KDSL_HOME/deciders).")] = None,
    epochs: Annotated[float, typer.Option(help="Passes over the search split.")] = 1.0,
    learning_rate: Annotated[float, typer.Option(help="AdamW learning rate.")] = 3e-4,
    batch_size: Annotated[int, typer.Option(help="Samples per optimiser step.")] = 8,
    lora_r: Annotated[int, typer.Option(help="LoRA rank.")] = 8,
    layers_fraction: Annotated[float, typer.Option(help="Share of the top blocks that get adapters.")] = 0.5,
    augment_p: Annotated[float, typer.Option(help="Drop each dialogue / OCR line with this probability.")] = 0.1,
    with_rules: Annotated[bool, typer.Option("--with-rules", help="Put the labels of fired memory rules into "
                                                                   "the prompt (not yet used by default).")] = False,
    split: Annotated[Path | None, typer.Option(help="Use this split file instead of a seeded split.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the split, the shuffling and the augmentation.")] = 0,
    no_images: Annotated[bool, typer.Option("--no-images", help="Dialogue text only (no OCR / visual labels).")]
    = False,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads; 1 is much faster when other jobs share "
                                                     "the cores.")] = None,
) -> None:
    """Train a decider, then fit its per-task temperature on the verify split.

    Example: kdsl train --data ../shared/data/www2025-mdsirc            (one joint decider, both tasks)
             kdsl train --data ../shared/data/www2025-mdsirc --task image_scene --epochs 2
    Then:    kdsl eval --decider NAME
    """
    from kdsl.agents.decider import deciders_dir
    from kdsl.agents.decider_prompt import PromptConfig
    from kdsl.training.config import TrainConfig
    from kdsl.training.workflow import prepare, train_and_calibrate

    if with_rules:
        raise typer.BadParameter("--with-rules is not available yet: the arbiter combines rules at prediction time")
    settings = Settings()
    ensure_pack(model, settings)
    config = TrainConfig(base_model=model, epochs=epochs, learning_rate=learning_rate, batch_size=batch_size,
                         lora_r=lora_r, lora_alpha=2 * lora_r, layers_fraction=layers_fraction, augment_p=augment_p,
                         prompt=PromptConfig(), seed=seed, threads=threads)
    name = name or default_name(task, model)
    folder = deciders_dir(settings) / name
    console.print("preparing data (load, split, features) ...")
    prepared = prepare(data, settings, tasks=task, split_path=split, seed=seed, images=not no_images)
    n_search = sum(1 for s in prepared.part("search").samples if s.label is not None)
    with progress_bar() as bar:
        job = bar.add_task("training", total=None, info="")

        def on_step(step: int, total: int, loss: float) -> None:
            bar.update(job, total=total, completed=step, info=f"loss {loss:.3f}")

        scoring = bar.add_task("calibrating on verify", total=len(prepared.split.verify), info="", visible=False)

        def on_scored(n: int) -> None:
            bar.update(scoring, advance=n, visible=True)

        result, calibration = train_and_calibrate(prepared, folder, config, settings, name=name, data_path=data,
                                                  images=not no_images, on_step=on_step, progress=on_scored)
    console.print(f"decider [bold]{name}[/bold] -> {folder}", highlight=False)
    console.print(f"trained on {n_search} search samples: {result.steps} steps in {result.seconds:.0f} s, "
                  f"loss {result.first_loss:.3f} -> {result.last_loss:.3f}", highlight=False)
    for t, temp in calibration.temperatures.items():
        console.print(f"  {t}: temperature {temp:.2f}, verify NLL {calibration.nll_before[t]:.3f} -> "
                      f"{calibration.nll_after[t]:.3f} on {calibration.n[t]}", highlight=False)
    console.print(f"next: kdsl eval --decider {name}", highlight=False)
