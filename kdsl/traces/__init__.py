"""Session traces: what each node and agent did, as append-only JSONL events, and the session's HTML report."""

from kdsl.traces.events import TraceEvent, TraceLog, digest
from kdsl.traces.report import render_report, write_report

__all__ = ["TraceEvent", "TraceLog", "digest", "render_report", "write_report"]
