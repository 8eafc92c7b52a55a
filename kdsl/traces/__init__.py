"""Session traces: what each node and agent did, as append-only JSONL events."""

from kdsl.traces.events import TraceEvent, TraceLog

__all__ = ["TraceEvent", "TraceLog"]
