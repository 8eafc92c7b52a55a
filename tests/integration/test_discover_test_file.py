"""A user's own train and test files: `kdsl discover --data TRAIN --test TEST`, with an out-of-scope label scored
apart (in-scope accuracy, out-of-scope recall), on a real CLINC150 slice with its `oos` queries."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kdsl.cli.main import app
from kdsl.config import Settings
from kdsl.data import k_shot, load_dataset, save_jsonl
from kdsl.graph.layout import EVALUATION, SPLIT

pytestmark = pytest.mark.slow

INTENTS = 8


@pytest.fixture(scope="module")
def files(clinc150_path: Path, tmp_path_factory) -> tuple[Path, Path, dict[str, int]]:
    """Train: 8 examples of each of 8 intents and of `oos`; test: that many again, from the official test split."""
    data = load_dataset(clinc150_path)
    intents = [lab for lab in data.label_spaces["intent"] if lab != "oos"][:INTENTS] + ["oos"]
    kept = data.subset([s.id for s in data.samples if s.label in intents])
    kept = kept.model_copy(update={"label_spaces": {"intent": tuple(intents)}})
    by_split = {p: [s.id for s in kept.samples if s.meta.get("split") == p] for p in ("train", "test")}
    folder = tmp_path_factory.mktemp("own")
    train = save_jsonl(kept.subset(k_shot(kept, 8, ids=by_split["train"], seed=0)), folder / "train.jsonl")
    test_ids = k_shot(kept, 8, ids=by_split["test"], seed=0)
    test = save_jsonl(kept.subset(test_ids), folder / "test.jsonl")
    return train, test, {"test": len(test_ids), "oos": sum(kept.get(i).label == "oos" for i in test_ids)}


def test_discover_with_a_test_file_scores_out_of_scope_apart(files, tmp_path, monkeypatch):
    train, test, n = files
    monkeypatch.setenv("KDSL_HOME", str(tmp_path / "home"))
    runner = CliRunner()
    got = runner.invoke(app, ["discover", "--data", str(train), "--test", str(test), "--iterations", "40",
                              "--no-images", "--json"])
    assert got.exit_code == 0, got.output
    assert "out-of-scope (oos) recall" in got.output and "in-scope accuracy" in got.output
    scores = json.loads(got.output.strip().splitlines()[-1])
    session = Settings().sessions_dir / scores["session"]
    folder = session if (session / SPLIT).exists() else session.with_name(f"{scores['session']}.intent")
    split = json.loads((folder / SPLIT).read_text(encoding="utf-8"))
    # The whole training file is searched and the test file sealed: nothing drawn from one part into the other.
    assert len(split["search"]) == 9 * 8 and len(split["test"]) == n["test"] and split["verify"] == []
    assert not set(split["search"]) & set(split["test"])
    ev = json.loads((folder / EVALUATION).read_text(encoding="utf-8"))
    oos = ev["out_of_scope"]
    assert oos["label"] == "oos"
    gold = [json.loads(line) for line in test.read_text(encoding="utf-8").splitlines()[1:]]
    for key in ("fallback", "rules_with_fallback", "baseline"):
        o = oos[key]
        assert (o["n_in_scope"], o["n_out_of_scope"]) == (n["test"] - n["oos"], n["oos"])
        assert 0 <= o["in_scope_accuracy"] <= 1 and 0 <= o["out_of_scope_recall"] <= 1
    assert len(gold) >= n["test"]
    # On 8 intents the CPU decider separates most in-scope queries (chance is 1 in 9).
    assert oos["fallback"]["in_scope_accuracy"] > 0.5
    # eval --session --json carries the same out-of-scope scores.
    got = runner.invoke(app, ["eval", "--session", scores["session"], "--json"])
    assert got.exit_code == 0, got.output
    task = json.loads(got.output.strip().splitlines()[-1])["tasks"]["intent"]
    assert task["out_of_scope"]["decider"]["out_of_scope_recall"] == oos["fallback"]["out_of_scope_recall"]


@pytest.mark.parametrize("make, message", [
    (lambda train, test, tmp: ["--test", str(tmp / "missing.jsonl")], "missing.jsonl"),
    (lambda train, test, tmp: ["--oos-label", "nope"], "--oos-label 'nope' is not a label"),
    (lambda train, test, tmp: ["--test", str(test), "--split", str(tmp / "s.json")], "not both"),
    (lambda train, test, tmp: ["--test", str(_relabel(test, tmp))], "not in the training data's label space"),
])
def test_bad_test_file_options_are_one_line_errors_and_leave_no_session(files, tmp_path, monkeypatch, make,
                                                                         message):
    train, test, _ = files
    monkeypatch.setenv("KDSL_HOME", str(tmp_path / "home"))
    got = CliRunner().invoke(app, ["discover", "--data", str(train), "--no-images", *make(train, test, tmp_path)])
    assert got.exit_code == 2, got.output
    assert message in re.sub(r"[\s│╭╮╰╯─]+", " ", got.output) and "Traceback" not in got.output
    sessions = Settings().sessions_dir
    assert not sessions.is_dir() or not any(sessions.iterdir())


def _relabel(test: Path, tmp: Path) -> Path:
    """The test file with one sample's label changed to one the training file never had."""
    lines = test.read_text(encoding="utf-8").splitlines()
    head, row = json.loads(lines[0]), json.loads(lines[1])
    head["label_spaces"]["intent"].append("book_a_spaceship")  # the file itself is consistent
    row["label"] = "book_a_spaceship"
    out = tmp / "relabelled.jsonl"
    out.write_text("\n".join([json.dumps(head), json.dumps(row), *lines[2:]]) + "\n", encoding="utf-8")
    return out
