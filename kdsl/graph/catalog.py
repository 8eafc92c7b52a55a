"""Reading session folders back: the list of sessions and one session's trace and search tree."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from kdsl.config import Settings
from kdsl.graph.layout import CONFIG, EVENTS, PROGRESS, REPORT, SEARCH, read_json
from kdsl.traces import TraceEvent, TraceLog


class SessionListing(BaseModel):
    """One line of `kdsl sessions list`."""

    model_config = ConfigDict(frozen=True)

    session_id: str
    path: Path
    created: float
    task: str
    author: str
    strategy: str
    status: str  # finished | stopped (resume it) | new
    iterations: int
    best_reward: float | None
    accepted: int | None
    test_weighted_f1: float | None  # rules + fallback on the sealed test split


def _read(path: Path) -> Any:
    try:
        return read_json(path)
    except (OSError, json.JSONDecodeError):
        return None


def list_sessions(settings: Settings | None = None) -> list[SessionListing]:
    """Every session under KDSL_HOME/sessions, newest first. Folders without a readable config are skipped."""
    root = (settings or Settings()).sessions_dir
    out = []
    for folder in sorted(root.glob("*/"), reverse=True) if root.exists() else []:
        head = _read(folder / CONFIG)
        if not isinstance(head, dict) or "config" not in head:
            continue
        config, progress, report = head["config"], _read(folder / PROGRESS) or {}, _read(folder / REPORT)
        test = (report or {}).get("test") or {}
        if isinstance(head.get("children"), dict):  # a session over every task: its children's figures
            tasks = list((report or {}).get("tasks", {}).values())
            out.append(SessionListing(
                session_id=head.get("session_id", folder.name), path=folder, created=head.get("created", 0.0),
                task=" + ".join(head["children"]), author=config.get("author", "?"),
                strategy=config.get("strategy", "?"), status="finished" if report else "running or stopped",
                iterations=sum(int((t.get("search") or {}).get("iterations", 0)) for t in tasks),
                best_reward=None, accepted=sum(len(t.get("accepted_rules", [])) for t in tasks) if report else None,
                test_weighted_f1=(sum(t["test"]["rules_with_fallback"]["weighted_f1"] for t in tasks) / len(tasks)
                                  if tasks else None)))
            continue
        out.append(SessionListing(
            session_id=head.get("session_id", folder.name), path=folder, created=head.get("created", 0.0),
            task=config.get("task", "?"), author=config.get("author", "?"), strategy=config.get("strategy", "?"),
            status="finished" if report else ("stopped" if progress else "new"),
            iterations=int(progress.get("iterations", 0)), best_reward=progress.get("best_reward"),
            accepted=len(report.get("accepted_rules", [])) if report else None,
            test_weighted_f1=(test.get("rules_with_fallback") or {}).get("weighted_f1"),
        ))
    return out


class SessionTrace(BaseModel):
    """What `kdsl trace show` prints: the events in order and the search tree's nodes (empty before discover ends)."""

    model_config = ConfigDict(frozen=True)

    session_id: str
    events: tuple[TraceEvent, ...]
    nodes: tuple[dict[str, Any], ...]
    best_node: int | None


def session_trace(session_id: str, settings: Settings | None = None) -> SessionTrace:
    """Read a session's trace log and search tree; KeyError names the session when it does not exist."""
    folder = (settings or Settings()).sessions_dir / session_id
    if not (folder / CONFIG).exists():
        raise KeyError(f"no session {session_id!r} under {folder.parent}; see `kdsl sessions list`")
    events = TraceLog(folder / EVENTS).read()
    search = _read(folder / SEARCH) or {}
    return SessionTrace(session_id=session_id, events=tuple(events), nodes=tuple(search.get("nodes", [])),
                        best_node=search.get("best_node"))
