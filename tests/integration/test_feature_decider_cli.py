"""The CPU decider through every command a user runs: train (the default kind), eval, predict and serve, on real
Banking77 utterances."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from kdsl.agents.predictor import Predictor
from kdsl.cli.main import app
from kdsl.config import Settings
from kdsl.data import Dataset, k_shot, load_dataset, save_jsonl
from kdsl.serve import create_app

INTENTS = 6


@pytest.fixture(scope="module")
def slice_path(banking77_path, tmp_path_factory) -> tuple[Path, Path, Dataset]:
    """Six real intents, 20 training utterances each (a JSONL a user could write), and 30 others to predict."""
    full = load_dataset(banking77_path)
    labels = sorted(full.label_spaces["intent"])[:INTENTS]
    ds = Dataset(name="b77", samples=tuple(s for s in full.samples if s.label in labels),
                 label_spaces={"intent": tuple(labels)})
    train = ds.subset(k_shot(ds, 20, ids=[s.id for s in ds.samples if s.meta["split"] == "train"], seed=0))
    other = ds.subset(k_shot(ds, 5, ids=[s.id for s in ds.samples if s.meta["split"] == "test"], seed=0))
    folder = tmp_path_factory.mktemp("data")
    return save_jsonl(train, folder / "train.jsonl"), save_jsonl(other, folder / "other.jsonl"), other


def test_train_eval_predict_serve_with_the_default_kind(slice_path, tmp_path, monkeypatch):
    train_file, other_file, other = slice_path
    monkeypatch.setenv("KDSL_HOME", str(tmp_path / "home"))
    runner = CliRunner()
    got = runner.invoke(app, ["train", "--data", str(train_file), "--name", "b77"])
    assert got.exit_code == 0, got.output
    assert "blocks" in got.output and "kdsl eval --decider b77" in got.output
    folder = Settings().home / "deciders" / "b77"
    card = json.loads((folder / "decider.json").read_text(encoding="utf-8"))
    assert card["kind"] == "features" and Path(card["training"]["data_path"]).is_absolute()
    assert (folder / "heads.npz").is_file() and (folder / "split.json").is_file()

    got = runner.invoke(app, ["eval", "--decider", "b77", "--no-memory", "--test", str(other_file), "--out",
                              str(tmp_path / "eval")])
    assert got.exit_code == 0, got.output
    report = json.loads((tmp_path / "eval" / "evaluation.json").read_text(encoding="utf-8"))
    decider = next(r for r in report["results"] if r["mode"] == "decider")
    assert report["n"] == {"intent": len(other)} and decider["scores"]["accuracy"] >= 0.6  # chance: 1/6

    out = tmp_path / "decisions.jsonl"
    got = runner.invoke(app, ["predict", "--decider", "b77", "--in", str(other_file), "--out", str(out)])
    assert got.exit_code == 0, got.output
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == len(other) and all(r["source"] == "decider" and r["decider_top"] for r in rows), rows[0]

    predictor = Predictor.load("b77", Settings())
    assert predictor.info.backend.startswith("features:") and predictor.info.adapter is None
    sample = other.samples[0]
    with TestClient(create_app(predictor)) as client:
        r = client.post("/v1/predict", json={"task": "intent",
                                             "turns": [{"role": "user", "text": sample.turns[0].text}]})
        assert r.status_code == 200, r.text
        [decision] = r.json()["decisions"]
        assert decision["label"] in other.label_spaces["intent"] and len(decision["decider_top"]) == 3
        # A lone surrogate is valid JSON but no text: a 422 with a code, never a 500.
        for body in ('{"task": "intent", "turns": [{"role": "user", "text": "\\ud800 x"}]}',
                     '{"task": "intent", "turns": [{"role": "user", "text": "x"}], "candidates": ["\\ud800"]}'):
            r = client.post("/v1/predict", content=body, headers={"content-type": "application/json"})
            assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_text", r.text
        assert client.get("/healthz").status_code == 200

    got = runner.invoke(app, ["serve", "--decider", "b77", "--port", "99999"])
    assert got.exit_code == 2 and "65535" in got.output

    got = runner.invoke(app, ["train", "--data", str(train_file), "--kind", "nope"])
    assert got.exit_code == 2 and "unknown decider kind 'nope'" in got.output
