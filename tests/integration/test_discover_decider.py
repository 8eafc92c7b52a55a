"""A discovery session with the CPU decider inside: rules are sought where the decider errs on samples it did not
learn, and the sealed test compares rules + decider with the decider alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kdsl.agents.decider_kinds import load_decider
from kdsl.config import Settings
from kdsl.graph import SessionConfig, run_session
from kdsl.graph.nodes import DECIDER_DIR, DECIDER_PREDICTIONS, FEATURES, SPLIT
from kdsl.tools.features import FeatureTable

pytestmark = pytest.mark.slow


def test_session_rewards_rules_against_out_of_fold_decider_predictions(home: Settings, mdsirc_path: Path, mdsirc):
    config = SessionConfig(data=mdsirc_path, task="dialogue_intent", author="contrast", iterations=60, seed=0,
                           images=False, min_support=2, min_precision_lower=0.3)
    outcome = run_session(config, home)
    folder = outcome.session_dir
    report = outcome.report
    predictions = json.loads((folder / DECIDER_PREDICTIONS).read_text(encoding="utf-8"))
    split = json.loads((folder / SPLIT).read_text(encoding="utf-8"))
    parts = predictions["parts"]
    assert {p: set(parts[p]) for p in parts} == {p: set(split[p]) for p in ("search", "verify", "test")}

    # The search reads out-of-fold labels: on its own training samples the fitted decider is far more often
    # right than the labels the search was given, which came from heads that never saw those samples.
    decider = load_decider(folder / DECIDER_DIR, home)
    table = FeatureTable.load(folder / FEATURES)
    search = [mdsirc.get(i) for i in split["search"]]
    in_sample = {d.sample_id: d.best for d in decider.predict(search, table)}
    gold = {s.id: s.label for s in search}
    oof_right = sum(parts["search"][i] == gold[i] for i in gold)
    in_sample_right = sum(in_sample[i] == gold[i] for i in gold)
    assert in_sample_right > oof_right + 0.1 * len(gold)
    assert abs(oof_right / len(gold) - predictions["cv_accuracy"]) < 1e-9

    # The sealed test compares the decider alone with the decider plus the accepted rules.
    test = report["test"]
    assert test["fallback_name"] == "features decider"
    test_gold = {s.id: s.label for s in mdsirc.samples if s.id in set(split["test"])}
    decider_right = sum(parts["test"][i] == g for i, g in test_gold.items()) / len(test_gold)
    assert abs(test["fallback"]["accuracy"] - decider_right) < 1e-9
    assert test["fallback"]["weighted_f1"] > 0.4  # the majority label scores about 0.01 here
    assert report["search"]["best_reward"] >= report["search"]["initial_reward"]
