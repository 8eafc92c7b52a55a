"""The `kdsl` command: wires the sub-apps, nothing else."""

from __future__ import annotations

import logging

import typer

from kdsl import __version__
from kdsl.cli import (
    data_cmd,
    discover_cmd,
    eval_cmd,
    features_cmd,
    models_cmd,
    report_cmd,
    rules_cmd,
    seesaw_cmd,
    serve_cmd,
    sessions_cmd,
    train_cmd,
)

app = typer.Typer(
    name="kdsl",
    help="Learn interpretable rules for few-shot multimodal dialogue intent recognition, and decide with them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(data_cmd.app, name="data")
app.add_typer(features_cmd.app, name="features")
app.add_typer(rules_cmd.app, name="rules")
app.add_typer(models_cmd.app, name="models")
app.add_typer(discover_cmd.app)  # one command: `kdsl discover`
app.add_typer(sessions_cmd.sessions_app, name="sessions")
app.add_typer(sessions_cmd.trace_app, name="trace")
app.add_typer(report_cmd.app)  # one command: `kdsl report`
app.add_typer(train_cmd.app)  # `kdsl train`
app.add_typer(eval_cmd.app)  # `kdsl eval`
app.add_typer(seesaw_cmd.app)  # `kdsl seesaw`
app.add_typer(serve_cmd.app)  # `kdsl serve`, `kdsl predict`


def _version(value: bool) -> None:
    if value:
        typer.echo(f"kdsl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what kdsl does (INFO level)."),
) -> None:
    level = logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def main() -> None:
    app()
