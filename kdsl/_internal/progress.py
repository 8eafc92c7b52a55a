"""Progress that shows where it is read: a live bar on a terminal, and plain lines in a log file or a pipe (every
10% of the work or 30 seconds, with counts and the time left), since a bar draws nothing there."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

EVERY_SECONDS = 30.0
EVERY_SHARE = 0.1
QUIET_SECONDS = 1.0  # a tenth of quick work does not earn a line of its own


class LineProgress:
    """The part of rich's Progress kdsl uses (add_task, update, advance), printing a line now and then."""

    def __init__(self, stream: TextIO | None = None, *, disable: bool = False,
                 clock: Callable[[], float] = time.monotonic):
        self.stream = stream or sys.stderr
        self.disable = disable
        self.clock = clock
        self._tasks: dict[int, dict[str, Any]] = {}

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        for task_id, t in self._tasks.items():
            if t["completed"] != t["reported"]:
                self._line(task_id, done=True)

    def add_task(self, description: str, total: float | None = None, **fields: Any) -> int:
        task_id = len(self._tasks)
        now = self.clock()
        self._tasks[task_id] = {"description": description, "total": total, "completed": 0, "fields": fields,
                                "start": now, "last": now, "reported": 0}
        return task_id

    def update(self, task_id: int, *, advance: float = 0, completed: float | None = None,
               total: float | None = None, description: str | None = None, **fields: Any) -> None:
        t = self._tasks[task_id]
        t["completed"] = completed if completed is not None else t["completed"] + advance
        if total is not None:
            t["total"] = total
        if description is not None:
            t["description"] = description
        t["fields"].update(fields)
        now = self.clock()
        step = (t["total"] or 0) * EVERY_SHARE
        if now - t["last"] >= EVERY_SECONDS or (
                step and t["completed"] - t["reported"] >= step and now - t["last"] >= QUIET_SECONDS) or (
                t["total"] and t["completed"] >= t["total"] and t["reported"] < t["total"]):
            self._line(task_id)

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def _line(self, task_id: int, done: bool = False) -> None:
        t = self._tasks[task_id]
        t["last"], t["reported"] = self.clock(), t["completed"]
        if self.disable:
            return
        elapsed = t["last"] - t["start"]
        total, completed = t["total"], t["completed"]
        where = f"{completed:g}/{total:g}" if total else f"{completed:g}"
        eta = ""
        if total and completed and completed < total:
            eta = f", about {elapsed / completed * (total - completed):.0f} s left"
        extra = " ".join(str(v) for v in t["fields"].values() if v not in (None, ""))
        print(f"{t['description']}: {where} after {elapsed:.0f} s{eta}{(' (' + extra + ')') if extra else ''}",
              file=self.stream, flush=True)


def progress(*, console: Any = None, disable: bool = False, info_field: str = "info") -> Any:
    """A live bar when the console is a terminal, else a `LineProgress` writing to its stream."""
    if console is None:
        from rich.console import Console

        console = Console(stderr=True)
    if not console.is_terminal:
        return LineProgress(console.file, disable=disable)
    return Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn(f"{{task.fields[{info_field}]}}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=console, disable=disable)
