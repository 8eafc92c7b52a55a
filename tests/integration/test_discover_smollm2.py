"""A full short discovery session with a real language model author (SmolLM2 through llama.cpp) on real dialogues."""

from __future__ import annotations

import json

import pytest

from kdsl.graph import SessionConfig, run_session

pytestmark = pytest.mark.slow


def test_session_with_the_smollm2_author(mdsirc_path, home_with_packs):
    settings = home_with_packs()
    config = SessionConfig(data=mdsirc_path, task="dialogue_intent", author="llama_cpp:smollm2-135m-instruct",
                           iterations=1, k=2, author_max_tokens=400, images=False, seed=0, decider="majority",
                           folds=3)  # one fold searches; the nested estimate adds two inner searches
    outcome = run_session(config, settings)

    folder = outcome.session_dir
    report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    assert report["config"]["author"] == "llama_cpp:smollm2-135m-instruct"
    assert report["search"]["iterations"] >= 1 and report["search"]["tokens"] > 0
    assert report["search"]["best_reward"] >= report["search"]["initial_reward"]
    events = [json.loads(line) for line in (folder / "events.jsonl").read_text(encoding="utf-8").splitlines()]
    author_calls = [e for e in events if e["agent"] == "author"]
    assert author_calls and all(e["model"] and e["prompt_tokens"] > 100 for e in author_calls)
    search = json.loads((folder / "search.json").read_text(encoding="utf-8"))  # the first fold's search
    # Every author call is traced: the folds' searches, and the inner searches of the nested estimate.
    fold_calls = sum(json.loads(p.read_text(encoding="utf-8"))["totals"]["calls"] for p in folder.glob("search.fold*.json"))
    assert search["totals"]["calls"] <= fold_calls <= len(author_calls)
    # The small model's replies were processed: applied as edits, or dropped and counted by reason. (How many of
    # SmolLM2's replies are valid depends on the samples it is shown; the session must survive either way.)
    totals = search["totals"]
    assert totals["edits"] + totals["duplicates"] + totals["no_ops"] + sum(totals["invalid"].values()) >= 1
    labels = set(json.loads((folder / "gold.json").read_text(encoding="utf-8"))["labels"])
    assert len(labels) == 23
    for node in search["nodes"][1:]:  # edit keys read "op|target|task|label|condition"
        op, _, task, label = node["edit_key"].split("|")[:4]
        assert op in ("add", "refine", "drop")
        if op != "drop":
            assert task == "dialogue_intent" and label in labels
    verdict = json.loads((folder / "verdict.json").read_text(encoding="utf-8"))
    bars = verdict["config"]  # the step of the verifier's ladder the session settled on: at least the defaults
    assert bars["min_support"] >= 3 and bars["min_precision_lower"] >= 0.3 and bars["min_precision"] >= 0.75
    for rule in verdict["rules"]:  # whatever the small model wrote, only rules meeting the real thresholds pass
        if rule["accepted"]:
            s = rule["stats"]
            assert (s["support"] >= bars["min_support"] and s["precision_lower"] >= bars["min_precision_lower"]
                    and s["precision"] >= bars["min_precision"])
    split = json.loads((folder / "split.json").read_text(encoding="utf-8"))
    assert split["verify"] == [] and report["test"]["n"] == len(split["test"]) == 42
