"""`kdsl sessions` and `kdsl trace`: what discovery sessions did."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer
from rich.table import Table
from rich.tree import Tree

from kdsl.cli._edge import console, friendly_errors, print_json
from kdsl.config import Settings
from kdsl.errors import ConfigError

sessions_app = typer.Typer(help="List discovery sessions.", no_args_is_help=True)
trace_app = typer.Typer(help="Show what a session's agents did.", no_args_is_help=True)


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


@sessions_app.command("list")
@friendly_errors
def list_(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Sessions under KDSL_HOME/sessions, newest first, with their status and results.

    Example: kdsl sessions list
    """
    from kdsl.graph.catalog import list_sessions  # langgraph loads only here

    sessions = list_sessions(Settings())
    if as_json:
        print_json([s.model_dump(mode="json") for s in sessions])
        return
    table = Table(title=f"{len(sessions)} session(s) in {Settings().sessions_dir}")
    for col in ["session", "created", "task", "author", "status", "iterations", "best reward", "accepted",
                "test wF1"]:
        table.add_column(col, no_wrap=col == "session")
    for s in sessions:
        table.add_row(s.session_id, dt.datetime.fromtimestamp(s.created).strftime("%Y-%m-%d %H:%M"), s.task,
                      s.author, s.status, str(s.iterations), _fmt(s.best_reward),
                      "-" if s.accepted is None else str(s.accepted), _fmt(s.test_weighted_f1))
    console.print(table)


@trace_app.command("show")
@friendly_errors
def show(
    session_id: Annotated[str, typer.Argument(help="Session id (see `kdsl sessions list`).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The session's timeline (one line per node and agent call) and its search tree, best path marked.

    Example: kdsl trace show 20261124-063259-534809
    """
    from kdsl.graph.catalog import session_trace

    try:
        trace = session_trace(session_id, Settings())
    except KeyError as e:
        raise ConfigError(e.args[0]) from None
    if as_json:
        print_json(trace)
        return
    timeline = Table(title=f"session {session_id}: {len(trace.events)} event(s)")
    for col in ["+s", "node", "agent", "model", "tokens", "seconds", "best reward", "output"]:
        wide = col == "output"
        timeline.add_column(col, overflow="ellipsis", no_wrap=wide, max_width=70 if wide else None)
    start = trace.events[0].time if trace.events else 0.0
    for e in trace.events:
        timeline.add_row(f"{e.time - start:.1f}", e.node, e.agent or "", e.model or "", str(e.tokens),
                         f"{e.seconds:.1f}", _fmt(e.reward), (e.output or "")[:120])
    console.print(timeline)
    if not trace.nodes:
        console.print("no search tree yet (discover has not finished)")
        return
    by_parent: dict[int | None, list[dict]] = {}
    for node in trace.nodes:
        by_parent.setdefault(node.get("parent"), []).append(node)
    best_path: set[int] = set()
    parents = {n["id"]: n.get("parent") for n in trace.nodes}
    cursor = trace.best_node
    while cursor is not None:
        best_path.add(cursor)
        cursor = parents.get(cursor)

    def label(n: dict) -> str:
        edit = f"{n['op']} {n.get('new_rule') or n.get('target') or ''}" if n.get("op") else "start"
        mark = "[bold green]*[/bold green] " if n["id"] in best_path else ""
        return (f"{mark}#{n['id']} {edit}  reward {n['reward']:.4f}  visits {n.get('visits', 0)}  "
                f"rules {len(n.get('rule_ids', []))}")

    root = next(iter(by_parent.get(None, [])), None)
    if root is None:
        return
    tree = Tree(label(root))
    stack = [(root, tree)]
    while stack:
        node, branch = stack.pop()
        for child in sorted(by_parent.get(node["id"], []), key=lambda c: c["id"]):
            stack.append((child, branch.add(label(child))))
    console.print(tree)
