"""`kdsl sessions list` and `kdsl trace show` read back a real (model-free) discovery session."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from kdsl.cli.main import app

runner = CliRunner()


def test_list_and_trace_a_finished_session(mdsirc_path, tmp_path, monkeypatch):
    monkeypatch.setenv("KDSL_HOME", str(tmp_path))
    ran = runner.invoke(app, ["discover", "--data", str(mdsirc_path), "--task", "dialogue_intent", "--iterations",
                              "30", "--seed", "3", "--no-images", "--author", "ngram", "--decider", "majority"])
    assert ran.exit_code == 0, ran.output

    (listed,) = json.loads(runner.invoke(app, ["sessions", "list", "--json"]).stdout)
    assert listed["status"] == "finished" and listed["task"] == "dialogue_intent" and listed["iterations"] == 30
    folder = Path(listed["path"])
    report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    assert listed["best_reward"] == report["search"]["best_reward"]

    trace = json.loads(runner.invoke(app, ["trace", "show", listed["session_id"], "--json"]).stdout)
    nodes = [e["node"] for e in trace["events"]]
    assert nodes[0] == "prepare" and nodes[-1] == "report" and nodes.count("discover") >= 2
    assert sum(e["agent"] == "author" for e in trace["events"]) >= 1
    assert len(trace["nodes"]) > 1 and trace["best_node"] is not None
    shown = runner.invoke(app, ["trace", "show", listed["session_id"]])
    assert shown.exit_code == 0 and "start" in shown.stdout and f"#{trace['best_node']}" in shown.stdout

    missing = runner.invoke(app, ["trace", "show", "no-such-session"])
    assert missing.exit_code == 2 and "kdsl sessions list" in missing.output
