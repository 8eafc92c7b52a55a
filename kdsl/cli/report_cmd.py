"""`kdsl report`: one self-contained HTML page about a discovery session."""

from __future__ import annotations

import webbrowser
from pathlib import Path
from typing import Annotated

import typer

from kdsl.cli._edge import check_output, console, err_console, friendly_errors
from kdsl.config import Settings, resolve_session

app = typer.Typer(help="Write a session's HTML report.")


def _children(settings: Settings, session_id: str) -> dict[str, str]:
    import json

    if Path(session_id).name != session_id:
        return {}
    path = settings.sessions_dir / session_id / "config.json"
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")).get("children") or {})
    except (OSError, ValueError):
        return {}


@app.command("report")
@friendly_errors
def report(
    session_id: Annotated[str, typer.Argument(help="Session id (see `kdsl sessions list`), or `last`.")],
    out: Annotated[Path | None, typer.Option("--out", help="Where to write (default: the session folder's "
                                                         "report.html).")] = None,
    open_: Annotated[bool, typer.Option("--open", help="Open the page in a web browser.")] = False,
) -> None:
    """One HTML page about a session: settings, scores with confidence intervals, the search tree with the best
    path, the rules with their statistics and verdicts, per-class F1, confusion matrix, costs and timeline. Inline
    CSS and SVG, no script, nothing fetched: it opens anywhere, offline.

    A session over several tasks gets one page per task (FILE.TASK.html with --out).

    Example: kdsl report 20261124-063259-534809 --out session.html --open
    """
    from kdsl.graph.catalog import session_trace  # langgraph loads only here
    from kdsl.report import write_report

    if out is not None:
        check_output(out)
    settings = Settings()
    session_id = resolve_session(session_id, settings)
    children = _children(settings, session_id)
    if children:  # a session over several tasks: one page per task
        for task, child in children.items():
            target = out.with_name(f"{out.stem}.{task}{out.suffix}") if out is not None else None
            report(child, target, open_)
        return
    try:
        if Path(session_id).name != session_id:  # a path, not an id: never read outside the sessions folder
            raise KeyError(f"no session {session_id!r} under {settings.sessions_dir}; see `kdsl sessions list`")
        session_trace(session_id, settings)
    except KeyError as e:
        err_console.print(f"[red]error:[/red] {e.args[0]}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    path = write_report(settings.sessions_dir / session_id, out)
    console.print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)", highlight=False, soft_wrap=True)
    if open_ and not webbrowser.open(path.resolve().as_uri()):
        console.print(f"no web browser found here; open {path.resolve().as_uri()} yourself", highlight=False,
                      soft_wrap=True)
