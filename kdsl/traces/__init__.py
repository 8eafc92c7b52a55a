"""Session traces: what each node and agent did, as append-only JSONL events."""

from kdsl.traces.events import TraceEvent, TraceLog, digest

__all__ = ["TraceEvent", "TraceLog", "digest"]
