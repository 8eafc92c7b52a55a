"""The discovery session end to end on the real MDSIRC dialogues: the CLI, the graph, the artifacts, the memory, and
a real SIGKILL in the middle of the search followed by `--resume`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kdsl.cli import discover_cmd
from kdsl.config import Settings
from kdsl.graph import SessionConfig, resume_session, run_session
from kdsl.memory import RuleMemory
from kdsl.rules import RuleSet
from kdsl.search import rule_key
from kdsl.traces import TraceLog

TASK = "dialogue_intent"
DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "www2025-mdsirc"
# The n-gram author's rules are narrow; on this small slice, one right hit at precision 1.0 is what they reach.
LOOSE = ["--min-support", "1", "--min-precision-lower", "0.15", "--target-precision", "0"]


def _accepted_in_memory(settings: Settings) -> list:
    with RuleMemory(settings=settings) as memory:
        return memory.list(task=TASK, status="accepted")


def test_full_session_with_the_cli(home):
    result = CliRunner().invoke(discover_cmd.app, [
        "--data", str(DATA), "--task", TASK, "--iterations", "150", "--seed", "1", "--no-images", "--decider",
        "majority", *LOOSE])
    assert result.exit_code == 0, result.output
    [folder] = list(home.sessions_dir.iterdir())
    assert folder.name in result.output and "test split" in result.output
    for name in ("config.json", "split.json", "features.jsonl", "rules.json", "verdict.json", "report.json",
                 "events.jsonl", "checkpoints.sqlite"):
        assert (folder / name).exists(), name
    config = json.loads((folder / "config.json").read_text())
    assert config["kdsl_version"] and config["config"]["task"] == TASK
    report = json.loads((folder / "report.json").read_text())
    assert report["search"]["iterations"] == 150
    assert report["search"]["best_reward"] >= report["search"]["initial_reward"]
    accepted = report["accepted_rules"]
    assert accepted, "the session should accept at least one rule"
    verdict = json.loads((folder / "verdict.json").read_text())
    by_id = {v["rule_id"]: v for v in verdict["rules"]}
    for r in accepted:  # the bars the verifier settled on hold for every accepted rule
        assert by_id[r["id"]]["stats"]["precision"] >= verdict["config"]["min_precision"]
    assert {"rules", "fallback", "rules_with_fallback", "bootstrap"} <= set(report["test"])
    stored = _accepted_in_memory(home)
    assert {rule_key(r) for r in stored} >= {rule_key(r) for r in RuleSet.load(folder / "rules.json")
                                             if r.id in {a["id"] for a in accepted}}
    events = TraceLog(folder / "events.jsonl").read()
    assert {e.node for e in events if e.agent is None} == {"prepare", "discover", "verify", "commit", "arbiter",
                                                           "evaluate", "report"}
    assert sum(e.agent == "author" for e in events) >= 10


def test_review_interrupt_keeps_only_what_the_person_keeps(home):
    config = SessionConfig(data=DATA, task=TASK, author="ngram", iterations=150, seed=1, images=False, review=True,
                           decider="majority",
                           min_support=1, min_precision_lower=0.15, target_precision=None)
    paused = run_session(config, home)
    assert paused.paused and paused.state["accepted"]
    shown: list = []
    done = resume_session(paused.session_id, home, review_fn=lambda p: shown.extend(p["rules"]) or [])
    assert not done.paused and shown
    assert done.state["accepted"] == [] and done.report["accepted_rules"] == []


def test_sigkill_in_the_search_then_resume(home, kill_in_search):
    folder = kill_in_search(["--data", str(DATA), "--task", TASK, "--iterations", "100000", "--budget-seconds", "6",
                             "--seed", "2", "--no-images", "--decider", "majority", *LOOSE])
    killed_at = json.loads((folder / "progress.json").read_text())
    assert not killed_at["finished"] and killed_at["iterations"] >= 20

    outcome = resume_session(folder.name, home)
    assert not outcome.paused
    final = json.loads((folder / "progress.json").read_text())
    assert final["finished"] and final["iterations"] > killed_at["iterations"]
    # Each fold's search went on from where the kill left it: no fold's best reward went down, none restarted.
    assert killed_at["folds"]
    for k, fold in killed_at["folds"].items():
        assert final["folds"][k]["best_reward"] >= fold["best_reward"]
        assert final["folds"][k]["iterations"] >= fold["iterations"]
    report = outcome.report
    # How many rules pass verify depends on how far a wall-clock-bounded search got, so it is not asserted here;
    # what must hold is that the resumed search is the one reported and every accepted rule was committed.
    assert report["search"]["iterations"] == final["iterations"]
    assert {a["id"] for a in report["accepted_rules"]} <= set(outcome.state["committed"]) | {
        r.id for r in _accepted_in_memory(home)}

    # Resuming a finished session changes nothing; the memory holds each accepted rule once.
    again = resume_session(folder.name, home)
    assert again.state["committed"] == outcome.state["committed"]
    stored = _accepted_in_memory(home)
    keys = [rule_key(r) for r in stored]
    assert len(keys) == len(set(keys))
    assert {a["id"] for a in report["accepted_rules"]} <= {r.id for r in stored} | set(outcome.state["committed"])


def test_session_without_a_task_covers_every_task(home):
    """`kdsl discover --data PATH` alone: one child session per task under one id, scored as one model."""
    result = CliRunner().invoke(discover_cmd.app, [
        "--data", str(DATA), "--iterations", "40", "--seed", "2", "--no-images", "--decider", "majority",
        "--json", *LOOSE])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.output.strip().splitlines()[-1])
    session = scores["session"]
    head = json.loads((home.sessions_dir / session / "config.json").read_text())
    assert set(head["children"]) == {"dialogue_intent", "image_scene"} == set(scores["tasks"])
    for task, child in head["children"].items():
        child_report = json.loads((home.sessions_dir / child / "report.json").read_text())
        assert child_report["config"]["task"] == task
        assert scores["tasks"][task]["together"]["weighted_f1"] == child_report["test"]["rules_with_fallback"][
            "weighted_f1"]
    for mode in ("decider", "rules", "together"):
        for metric, value in scores["overall"][mode].items():
            assert value == pytest.approx(sum(t[mode][metric] for t in scores["tasks"].values()) / 2)
    assert scores["n"] == sum(t["n"] for t in scores["tasks"].values())
    from kdsl.cli.main import app

    listed = CliRunner().invoke(app, ["sessions", "list"])
    assert listed.exit_code == 0, listed.output
    assert session in listed.output and "dialogue_intent +" in listed.output


@pytest.mark.parametrize(("args", "says"), [
    (["--task", "no_such_task"], "no task 'no_such_task'"),
    (["--iterations", "-5"], "--iterations"),
    (["--strategy", "bogus"], "--strategy"),
    (["--author", "bogus"], "--author"),
])
def test_bad_options_give_one_line_errors_and_no_ghost_session(home, args, says):
    result = CliRunner().invoke(discover_cmd.app, ["--data", str(DATA), "--no-images", "--decider", "majority",
                                                   *args])
    assert result.exit_code == 2, result.output
    assert says in " ".join(result.output.split()) and "Traceback" not in result.output
    assert not home.sessions_dir.exists() or not any(home.sessions_dir.iterdir())
