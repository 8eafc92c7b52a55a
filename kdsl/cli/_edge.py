"""Where exceptions become messages: known errors print one line; KDSL_DEBUG=1 shows the traceback."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from typing import Any

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape

from kdsl.errors import KdslError

LOG_WIDTH = 160


def _console(stderr: bool = False) -> Console:
    """A rich console; written to a file or a pipe (a log), it is wider than rich's 80 columns, so result tables
    keep their numbers instead of cutting them to "0.131…"."""
    out = Console(stderr=stderr)
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out.width = LOG_WIDTH
    return out


console = _console()
err_console = _console(stderr=True)


def friendly_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a KdslError (and a missing file) into one red line and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (KdslError, FileNotFoundError) as e:
            if os.environ.get("KDSL_DEBUG") == "1":
                raise
            # One line whatever the path lengths (soft_wrap: no hard line breaks), and the message is text, not
            # markup: a file name or sample id with [brackets] is printed as it is.
            err_console.print(f"[red]error:[/red] {escape(str(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def print_json(model: BaseModel | dict | list) -> None:
    """Machine-readable output on stdout (for --json), nothing else."""
    data = model.model_dump(mode="json") if isinstance(model, BaseModel) else model
    typer.echo(json.dumps(data, ensure_ascii=False, indent=1))
