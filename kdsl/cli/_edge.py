"""Where exceptions become messages: known errors print one line; KDSL_DEBUG=1 shows the traceback."""

from __future__ import annotations

import functools
import inspect
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.markup import escape

from kdsl.errors import ConfigError, DataError, KdslError

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


def os_message(e: OSError) -> str:
    """An OS error as a person reads it: the file, then the reason (no errno)."""
    where = " -> ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
    reason = e.strerror or str(e)
    return f"{where}: {reason}" if where else reason


def friendly_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a KdslError, and an error of the file system (missing file, no permission, full disk, a folder where
    a file should be), into one red line and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (KdslError, OSError) as e:
            if os.environ.get("KDSL_DEBUG") == "1":
                raise
            message = str(e) if isinstance(e, KdslError) else os_message(e)
            if isinstance(e, DataError) and e.skippable and "skip_invalid" in inspect.signature(fn).parameters:
                message += " (--skip-invalid skips such items and counts them)"
            # One line whatever the path lengths (soft_wrap: no hard line breaks), and the message is text, not
            # markup: a file name or sample id with [brackets] is printed as it is.
            err_console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def bad_option(e: ValidationError, options: dict[str, str] | None = None) -> typer.BadParameter:
    """A settings model's validation error as the option it concerns and the reason, in one line (`options` maps
    a field to its option where the names differ)."""
    first = e.errors()[0]
    field = str(first["loc"][0]) if first["loc"] else ""
    option = (options or {}).get(field) or ("--" + field.replace("_", "-") if field else "the options")
    return typer.BadParameter(f"{option}: {first['msg']}")


def check_output(path: Path, option: str = "--out") -> Path:
    """Refuse, before any work, an output file that cannot be written: a folder, a path under a file, a folder
    without write permission. Returns `path`."""
    where = f"{option} {path}" if option else str(path)
    if path.is_dir():
        raise ConfigError(f"{where}: is a folder; name a file to write")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{where}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{where}: no permission to write in {parent}")
    return path


def print_json(model: BaseModel | dict | list) -> None:
    """Machine-readable output on stdout (for --json), nothing else."""
    data = model.model_dump(mode="json") if isinstance(model, BaseModel) else model
    typer.echo(json.dumps(data, ensure_ascii=False, indent=1))
