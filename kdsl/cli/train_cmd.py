"""`kdsl train`: fit a decider on the search split: the CPU `features` kind (default) or a LoRA-post-trained LLM."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from kdsl.cli._edge import console, friendly_errors
from kdsl.config import Settings
from kdsl.training.config import DEFAULT_BASE

app = typer.Typer(help="Train a decider on the search split: the CPU default (`features`) or a LoRA LLM (`lora`).")


def progress_bar() -> Any:
    """A live bar on a terminal; plain progress lines in a log file or a pipe."""
    from kdsl._internal.progress import progress

    return progress(console=console)


def ensure_pack(model: str, settings: Settings) -> None:
    """Pull a registry pack the first time it is used, so defaults work on a fresh machine."""
    from kdsl.models import PACKS, list_packs, pull

    if model in PACKS and not any(p.name == model and p.pulled for p in list_packs(settings)):
        console.print(f"pulling model pack {model} (once) ...", highlight=False)
        pull(model, settings)


def default_name(tasks: list[str] | None, model: str) -> str:
    """`<tasks>-<model or kind>-<time>`: unique per run, readable in `ls KDSL_HOME/deciders`."""
    stem = re.sub(r"[^\w.-]+", "-", Path(model).name)[:40]
    return f"{'+'.join(tasks) if tasks else 'all'}-{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


@app.command()
@friendly_errors
def train(
    data: Annotated[Path, typer.Option(help="Dataset path (MDSIRC folder, JSONL, CSV ...).")],
    kind: Annotated[str, typer.Option(help="Decider kind: `features` (CPU default: n-grams, e5 and image "
                                           "embeddings with linear heads, about a minute) or `lora` (LoRA on an "
                                           "LLM, scored by label likelihood: for a GPU).")] = "features",
    task: Annotated[list[str] | None, typer.Option(help="Task(s) to train on; repeat for several. Default: all "
                                                        "(one joint decider).")] = None,
    model: Annotated[str, typer.Option(help="lora: base model (a pack, a transformers folder, a .gguf or an HF id).")]
    = DEFAULT_BASE,
    name: Annotated[str | None, typer.Option(help="Decider name (folder under KDSL_HOME/deciders).")] = None,
    epochs: Annotated[float, typer.Option(help="lora: passes over the search split.")] = 1.0,
    learning_rate: Annotated[float, typer.Option(help="lora: AdamW learning rate.")] = 3e-4,
    batch_size: Annotated[int, typer.Option(help="lora: samples per optimiser step.")] = 8,
    lora_r: Annotated[int, typer.Option(help="lora: LoRA rank.")] = 8,
    layers_fraction: Annotated[float, typer.Option(help="lora: share of the top blocks that get adapters.")] = 0.5,
    augment_p: Annotated[float, typer.Option(help="lora: drop each dialogue / OCR line with this probability.")]
    = 0.1,
    with_rules: Annotated[bool, typer.Option("--with-rules", help="Put the labels of fired memory rules into "
                                                                   "the prompt (not yet used by default).")] = False,
    split: Annotated[Path | None, typer.Option(help="Use this split file instead of a seeded split.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the split, the shuffling and the augmentation.")] = 0,
    no_images: Annotated[bool, typer.Option("--no-images", help="Dialogue text only (no OCR / visual labels).")]
    = False,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads; 1 is much faster when other jobs share "
                                                     "the cores.")] = None,
) -> None:
    """Train a decider on the search split; verify and test stay unseen.

    `features` (default) fits one linear head per feature block and task, weighs the blocks and calibrates the
    probabilities by 5-fold cross-validation on the search split. `lora` post-trains an LLM and fits its
    per-task temperature on verify.

    Example: kdsl train --data ../shared/data/www2025-mdsirc            (CPU decider, both tasks, ~2 minutes)
             kdsl train --data ../shared/data/www2025-mdsirc --kind lora --task image_scene --epochs 2
    Then:    kdsl eval --decider NAME
    """
    from kdsl.agents.decider_kinds import decider_kinds

    if with_rules:
        raise typer.BadParameter("--with-rules is not available yet: the arbiter combines rules at prediction time")
    if kind not in decider_kinds():
        raise typer.BadParameter(f"unknown decider kind {kind!r}; kinds: {', '.join(decider_kinds())}")
    if not data.exists():
        raise typer.BadParameter(f"{data}: no such file or folder")
    settings = Settings()
    if kind == "features":
        _train_features(data, task, name, split, seed, no_images, threads, settings)
        return
    _train_lora(data, task, model, name, epochs, learning_rate, batch_size, lora_r, layers_fraction, augment_p,
                split, seed, no_images, threads, settings)


def _train_features(data: Path, task: list[str] | None, name: str | None, split: Path | None, seed: int,
                    no_images: bool, threads: int | None, settings: Settings) -> None:
    from kdsl.agents.decider import deciders_dir
    from kdsl.agents.feature_decider import FeatureDeciderConfig
    from kdsl.training.workflow import fit_features_decider, prepare

    name = name or default_name(task, "features")
    folder = deciders_dir(settings) / name
    console.print("preparing data (load, split, features) ...")
    prepared = prepare(data, settings, tasks=task, split_path=split, seed=seed, images=not no_images)
    n_search = sum(1 for s in prepared.part("search").samples if s.label is not None)
    console.print(f"fitting the features decider on {n_search} search samples (5-fold CV chooses blocks, C and "
                  "temperature) ...", highlight=False)
    decider = fit_features_decider(prepared, folder, FeatureDeciderConfig(seed=seed), settings, name=name,
                                   data_path=data, images=not no_images, threads=threads)
    console.print(f"decider [bold]{name}[/bold] -> {folder}  (fit in {decider.fit_seconds_:.0f} s)", highlight=False)
    for t, head in decider.heads_.items():
        blocks = ", ".join(f"{b} {w:.2f}" for b, w in sorted(head.blocks.items(), key=lambda kv: -kv[1]))
        console.print(f"  {t}: {head.n} samples, {len(head.classes)} classes; blocks {blocks}; temperature "
                      f"{head.temperature:.2f}; CV accuracy {head.oof_accuracy:.3f}, log-loss {head.oof_log_loss:.3f}",
                      highlight=False)
    console.print(f"next: kdsl eval --decider {name}", highlight=False)


def _train_lora(data: Path, task: list[str] | None, model: str, name: str | None, epochs: float,
                learning_rate: float, batch_size: int, lora_r: int, layers_fraction: float, augment_p: float,
                split: Path | None, seed: int, no_images: bool, threads: int | None, settings: Settings) -> None:
    from kdsl.agents.decider import deciders_dir
    from kdsl.agents.decider_prompt import PromptConfig
    from kdsl.training.config import TrainConfig
    from kdsl.training.workflow import prepare, train_and_calibrate

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
