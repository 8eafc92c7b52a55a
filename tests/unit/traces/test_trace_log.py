"""The session trace: an append-only JSONL log that survives a crash mid-line."""

from __future__ import annotations

from kdsl.traces.events import TraceEvent, TraceLog


def test_an_event_after_a_line_cut_by_a_crash_starts_a_line_of_its_own(tmp_path):
    log = TraceLog(tmp_path / "events.jsonl")
    log.append(TraceEvent(session="s", node="prepare", output="first"))
    with log.path.open("ab") as f:  # a crash in the middle of writing the second event
        f.write(TraceEvent(session="s", node="discover", output="cut").model_dump_json().encode()[:25])
    log.append(TraceEvent(session="s", node="verify", output="after the resume"))
    assert [e.output for e in log.read()] == ["first", "after the resume"]
    assert len(log.path.read_text(encoding="utf-8").splitlines()) == 3
