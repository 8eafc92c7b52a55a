"""`kdsl features`: build what rules and text-only models see of each sample."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated

import typer

from kdsl.cli._edge import check_output, console, friendly_errors
from kdsl.config import Settings
from kdsl.data import load_dataset
from kdsl.tools.pipeline import default_builder

app = typer.Typer(help="Build sample features: dialogue text, OCR of images, visual labels.", no_args_is_help=True)


@app.command()
@friendly_errors
def build(
    data: Annotated[Path, typer.Option("--data", "-d", help="Dataset folder or file (any format kdsl reads).")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Feature table to write (JSONL).")] = None,
    skip_invalid: Annotated[bool, typer.Option("--skip-invalid", help="Skip bad samples, count them.")] = False,
    skip_errors: Annotated[
        bool, typer.Option("--skip-errors", help="Leave an unreadable image's fields empty instead of stopping.")
    ] = False,
    no_images: Annotated[bool, typer.Option("--no-images", help="Dialogue text only: no OCR, no labels.")] = False,
) -> None:
    """OCR every image, label it (EfficientNet-Lite0) and write one feature row per sample.

    OCR is PP-OCRv6 tiny (about 0.5 s an image); KDSL_OCR_ENGINE=ppocrv6-small or rapidocr picks another.
    Results are cached by image content under KDSL_HOME, so a second run does no OCR at all.
    Example: kdsl features build --data ../shared/data/www2025-mdsirc --out runs/mdsirc-features.jsonl
    """
    if out is not None:
        check_output(out)
    settings = Settings()
    dataset = load_dataset(data, skip_invalid=skip_invalid)
    builder = default_builder(settings, skip_errors=skip_errors, images=not no_images)
    table = builder.build(dataset)
    out = out or settings.home / "features" / f"{dataset.name}-{dataset.fingerprint()}.jsonl"
    table.save(out)
    report = builder.report_
    ocr_calls = builder.ocr.calls if builder.ocr else 0
    console.print(f"{report.summary()}; {ocr_calls} OCR call(s) -> {out}")
    if dataset.skipped:
        counts = Counter(item.code for item in dataset.skipped)
        ids = [i.sample_id for i in dataset.skipped if i.sample_id]
        console.print("[yellow]skipped invalid items:[/yellow] " + ", ".join(f"{c}: {n}" for c, n in counts.items())
                      + (f" (samples {', '.join(ids[:5])}{', ...' if len(ids) > 5 else ''})" if ids else ""),
                      soft_wrap=True)
    for f in report.failures:
        console.print(f"[yellow]skipped image[/yellow] {f.path} ({', '.join(f.sample_ids)}): {f.reason}")
