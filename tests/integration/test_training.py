"""Post-training the decider for real: a short LoRA run on SmolLM2 over real MDSIRC dialogues, then the decider,
the arbiters and the evaluation end to end, through the library and through `kdsl train` / `kdsl eval`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from kdsl.agents.decider import Decider, DeciderCard
from kdsl.cli.main import app
from kdsl.config import Settings
from kdsl.data import Dataset, save_jsonl
from kdsl.rules import Rule, RuleSet
from kdsl.rules.condition import AnyOf
from kdsl.tools.features import FeatureTable, SampleFeatures, dialogue_fields
from kdsl.training import TrainConfig, train_decider
from kdsl.training.workflow import prepare

pytestmark = pytest.mark.slow

SMOLLM2 = "smollm2-135m-instruct"
TASK = "dialogue_intent"


@pytest.fixture(scope="module")
def settings(home_with_packs) -> Settings:
    return home_with_packs()  # SmolLM2 and its transformers conversion, shared by the test run


@pytest.fixture(scope="module")
def small(mdsirc) -> Dataset:
    """Real dialogues of three intents, eight each (short ones, to keep CPU steps quick)."""
    ds = mdsirc.for_task(TASK)
    counts = ds.label_counts(TASK)
    labels = [lab for lab, n in counts.most_common() if n >= 8][:3]
    picked = []
    for lab in labels:
        pool = sorted((s for s in ds.samples if s.label == lab), key=lambda s: sum(len(t.text) for t in s.turns))
        picked += pool[:8]
    return Dataset(name="mdsirc-small", samples=tuple(picked), label_spaces={TASK: tuple(labels)},
                   source=ds.source)


def features_of(ds: Dataset) -> FeatureTable:
    return FeatureTable(SampleFeatures(sample_id=s.id, **dialogue_fields(s)) for s in ds.samples)


def zero_shot(folder: Path, ds: Dataset) -> Path:
    DeciderCard(name="base", base_model=SMOLLM2, tasks=(TASK,), label_spaces=dict(ds.label_spaces),
                label_suffix="<|im_end|>").save(folder)
    return folder


def test_lora_lowers_the_loss_and_changes_predictions(settings, small, tmp_path):
    labels = small.label_spaces[TASK]
    small = small.subset([i for lab in labels for i in [s.id for s in small.samples if s.label == lab][:4]])
    feats = features_of(small)
    config = TrainConfig(base_model=SMOLLM2, epochs=3, learning_rate=3e-3, batch_size=4, layers_fraction=1.0,
                         augment_p=0.0, seed=0)
    result = train_decider(small, feats, tmp_path / "trained", config, settings=settings)
    assert result.steps == 9 and result.samples_seen == 36
    first, last = np.mean(result.losses[:3]), np.mean(result.losses[-3:])
    assert last < first * 0.5, result.losses
    adapter = tmp_path / "trained" / "adapter"
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    card = DeciderCard.load(tmp_path / "trained")
    assert card.label_suffix == "<|im_end|>" and card.tasks == (TASK,) and card.training["steps"] == 9

    trained = Decider.load(tmp_path / "trained", settings)
    base = Decider.load(zero_shot(tmp_path / "base", small), settings)
    gold = [s.candidates.index(s.label) if s.candidates else small.label_spaces[TASK].index(s.label)
            for s in small.samples]
    after = trained.log_likelihoods(small.samples, feats)
    before = base.log_likelihoods(small.samples, feats)
    # The adapter moved probability onto the gold labels it was trained on, and it changed the top labels.
    gain = [a[g] - np.logaddexp.reduce(a) - (b[g] - np.logaddexp.reduce(b)) for a, b, g in zip(after, before, gold, strict=True)]
    assert np.mean(gain) > 1.0
    acc_after = np.mean([int(np.argmax(a)) == g for a, g in zip(after, gold, strict=True)])
    acc_before = np.mean([int(np.argmax(b)) == g for b, g in zip(before, gold, strict=True)])
    assert acc_after - acc_before >= 0.25, (acc_before, acc_after)
    assert [int(np.argmax(a)) for a in after] != [int(np.argmax(b)) for b in before]
    # Scores are cached in the folder: a new Decider reads them instead of running the model.
    again = Decider.load(tmp_path / "trained", settings)
    assert np.allclose(again.log_likelihoods(small.samples, feats)[0], after[0])
    assert again.backend.usage.calls == 0


def test_train_and_eval_commands(settings, small, tmp_path, monkeypatch):
    monkeypatch.setenv("KDSL_HOME", str(settings.home))
    data = save_jsonl(small, tmp_path / "small.jsonl")
    lab = small.label_spaces[TASK][0]
    term = max((t.text for s in small.samples if s.label == lab for t in s.turns if t.role == "user"), key=len)[:4]
    RuleSet(rules=(Rule(label=lab, task=TASK, when=AnyOf(field="user_text", any_of=(term,)),
                        statement=f"mentions {term}"),)).save(tmp_path / "rules.json")
    runner = CliRunner()
    name = f"test-{os.getpid()}"
    got = runner.invoke(app, ["train", "--data", str(data), "--kind", "lora", "--model", SMOLLM2, "--name", name,
                              "--epochs", "1",
                              "--batch-size", "4", "--layers-fraction", "1", "--learning-rate", "0.002",
                              "--no-images"])
    assert got.exit_code == 0, got.output
    assert "temperature" in got.output and f"kdsl eval --decider {name}" in got.output
    folder = settings.home / "deciders" / name
    assert (folder / "calibration.json").is_file() and (folder / "split.json").is_file()

    out = tmp_path / "eval"
    got = runner.invoke(app, ["eval", "--decider", name, "--rules", str(tmp_path / "rules.json"), "--out", str(out)])
    assert got.exit_code == 0, got.output
    report = json.loads((out / "evaluation.json").read_text(encoding="utf-8"))
    split = json.loads((folder / "split.json").read_text(encoding="utf-8"))
    assert report["n"] == {TASK: len(split["test"])}
    assert report["modes"] == ["decider", "rules", "together:rules_first", "together:decider_first",
                               "together:stacked"]
    assert {(c["a"], c["b"]) for c in report["comparisons"]} >= {("together:stacked", "decider")}
    for r in report["results"]:
        assert sum(row["support"] for row in r["per_class"]) == len(split["test"])
        assert sum(map(sum, r["confusion"])) == len(split["test"])
    assert (out / "evaluation.md").read_text(encoding="utf-8").startswith("# Evaluation of decider")
    assert (folder / "collaboration.json").is_file()

    # Any labeled file, scored by the trained decider without retraining.
    test_file = save_jsonl(small.subset([s.id for s in small.samples[::3]]), tmp_path / "other.jsonl")
    got = runner.invoke(app, ["eval", "--decider", name, "--no-memory", "--test", str(test_file), "--out",
                              str(tmp_path / "eval2")])
    assert got.exit_code == 0, got.output
    report2 = json.loads((tmp_path / "eval2" / "evaluation.json").read_text(encoding="utf-8"))
    assert report2["n"] == {TASK: 8} and report2["n_rules"] == {TASK: 0}
    stacked = [r for r in report2["results"] if r["mode"] == "together:stacked"][0]
    decider = [r for r in report2["results"] if r["mode"] == "decider"][0]
    assert stacked["scores"] == decider["scores"]  # no rules: together is the decider

    got = runner.invoke(app, ["eval", "--decider", "no-such-decider"])
    assert got.exit_code == 2 and "no decider 'no-such-decider'" in got.output


def test_prepare_splits_a_task_as_it_is_split_alone(mdsirc_path, settings):
    both = prepare(mdsirc_path, settings, images=False, progress=False)
    alone = prepare(mdsirc_path, settings, tasks=[TASK], images=False, progress=False)
    for part in ("search", "verify", "test"):
        assert {i for i in both.split.ids(part) if i in alone.features} == set(alone.split.ids(part))
