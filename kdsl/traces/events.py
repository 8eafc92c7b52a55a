"""Trace events: one JSON line per agent call and per graph node, appended to the session's `events.jsonl`."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

logger = logging.getLogger(__name__)

MAX_OUTPUT_CHARS = 2000


def truncate(text: str, limit: int = MAX_OUTPUT_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class TraceEvent(BaseModel):
    """One thing that happened in a session: a node ran, or an agent was called."""

    model_config = ConfigDict(frozen=True)

    session: str
    node: str = Field(description="Graph node the event happened in (prepare, discover, verify ...).")
    agent: str | None = Field(None, description="The agent called (author, verifier), None for a node event.")
    model: str | None = Field(None, description="Model pack or proposer name behind the agent.")
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    input_digest: str | None = Field(None, description="sha256 prefix of the input (prompt or error report).")
    output: str = Field("", description=f"What came out, cut to {MAX_OUTPUT_CHARS} characters.")
    reward: float | None = Field(None, description="Best search reward at the time, where one is known.")
    time: float = Field(default_factory=time.time, description="Unix time the event was written.")

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class TraceLog:
    """An append-only JSONL log of `TraceEvent`s; each line is flushed and synced as it is written, so a killed
    session keeps every event it wrote."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, event: TraceEvent) -> None:
        line = (event.model_dump_json() + "\n").encode("utf-8")
        with self.path.open("ab+") as f:
            # A line cut by a crash (no newline at the end) stays a damaged line of its own, never glued to this one.
            end = f.seek(0, os.SEEK_END)
            if end:
                f.seek(end - 1)
                if f.read(1) != b"\n":
                    line = b"\n" + line
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def read(self) -> list[TraceEvent]:
        """Every complete event (a line cut by a crash is skipped)."""
        if not self.path.exists():
            return []
        events = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                events.append(TraceEvent.model_validate_json(line))
            except ValueError:
                logger.warning("skipping a damaged trace line in %s", self.path)
        return events
