"""The report's trace sections: what the session spent (agent calls, graph nodes, search timings), its event
timeline, and the files of its folder."""

from __future__ import annotations

from collections import defaultdict

from kdsl.report.markup import Html, esc, note, num, table
from kdsl.report.session import SessionFiles
from kdsl.traces.events import TraceEvent

MAX_TIMELINE_ROWS = 2000  # a long session keeps its first and last events; the middle is counted
SHORT_OUTPUT_CHARS = 160  # of an event's output shown in the timeline row; the rest opens on a click


def costs_section(s: SessionFiles) -> str:
    if not s.events and not s.search:
        return note("No trace events yet.")
    agents: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0, 0, 0.0])
    nodes: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for e in s.events:
        if e.agent:
            a = agents[(e.agent, e.model or "–")]
            a[0] += 1
            a[1] += e.prompt_tokens
            a[2] += e.completion_tokens
            a[3] += e.seconds
        else:
            nodes[e.node][0] += 1
            nodes[e.node][1] += e.seconds
    parts = []
    if agents:
        rows = [[agent, model, int(c), int(p), int(q), int(p + q), num(sec, ".3f"),
                 num((p + q) / sec, ".0f") if sec > 0 else "–"]
                for (agent, model), (c, p, q, sec) in sorted(agents.items())]
        parts.append("<h3>Agent calls</h3>")
        parts.append(table(["agent", "model", "calls", "prompt tokens", "completion tokens", "tokens", "seconds",
                            "tokens / s"], rows, table_id="agent-costs", numeric=range(2, 8)))
    if nodes:
        order = {name: i for i, name in enumerate(["prepare", "discover", "verify", "review", "commit", "evaluate",
                                                   "report"])}
        rows = [[name, int(c), num(sec, ".2f")] for name, (c, sec) in sorted(nodes.items(),
                                                                               key=lambda kv: order.get(kv[0], 99))]
        parts.append("<h3>Graph nodes</h3>")
        parts.append(table(["node", "runs", "seconds"], rows, table_id="node-costs", numeric=(1, 2)))
    timings = (s.search or {}).get("timings") or {}
    if timings:
        rows = [[k, num(v, ".3f")] for k, v in timings.items()]
        parts.append("<h3>Where the search's time went</h3>")
        parts.append(table(["part", "seconds"], rows, numeric=(1,)))
    return "".join(parts)


def _short(text: str) -> str:
    if len(text) <= SHORT_OUTPUT_CHARS:
        return esc(text)
    return (f"<details><summary>{esc(text[:SHORT_OUTPUT_CHARS])}…</summary><pre>{esc(text)}</pre></details>")


def timeline_section(s: SessionFiles) -> str:
    events = s.events
    if not events:
        return note("No trace events yet.")
    start = events[0].time
    shown: list[TraceEvent | None] = list(events)
    if len(events) > MAX_TIMELINE_ROWS:
        half = MAX_TIMELINE_ROWS // 2
        shown = [*events[:half], None, *events[-half:]]
    rows, classes = [], []
    for e in shown:
        if e is None:
            rows.append(["…", f"{len(events) - MAX_TIMELINE_ROWS} events left out", "", "", "", "", "", ""])
            classes.append("gap")
            continue
        rows.append([num(e.time - start, ".2f"), e.node, e.agent or "", e.model or "", e.tokens or "",
                     num(e.seconds, ".3f"), num(e.reward), Html(_short(e.output or ""))])
        classes.append("agent" if e.agent else "nodeevent")
    return (note(f"{len(events)} events: one per graph node and one per author call; +s counts from the first.")
            + table(["+s", "node", "agent", "model", "tokens", "seconds", "best reward", "output"], rows,
                    table_id="timeline", numeric=(0, 4, 5, 6), row_class=lambda r: classes[r]))


def files_section(s: SessionFiles) -> str:
    rows = []
    for name in s.files.values():
        path = s.folder / name
        rows.append([name, f"{path.stat().st_size:,} bytes" if path.exists() else "missing"])
    return note(f"Folder: {s.folder}") + table(["file", "size"], rows, numeric=(1,))

