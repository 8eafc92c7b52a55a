"""A discovery session with the CPU decider inside: rules are sought where the decider errs on samples it did not
learn, verified by cross-fitting on folds their search never saw, and the sealed test compares rules + decider with
the decider alone. The finished session is one deployable model: `eval --session`, the predictor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kdsl.agents.decider_kinds import load_decider
from kdsl.agents.predictor import Predictor
from kdsl.cli.main import app
from kdsl.config import Settings
from kdsl.graph import SessionConfig, run_session
from kdsl.graph.layout import (
    ARBITER,
    DECIDER_DIR,
    DECIDER_PREDICTIONS,
    FEATURES,
    FOLD_RULES,
    FOLD_TERMS,
    RULES,
    SPLIT,
    TEST_PREDICTIONS,
    VERDICT,
)
from kdsl.rules import RuleEngine, RuleSet, atoms
from kdsl.search import rule_key
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
    assert split["verify"] == []  # no samples spent on a verify split: cross-fitting verifies
    assert {p: set(parts[p]) for p in parts} == {p: set(split[p]) for p in ("search", "test")}

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

    # Cross-fitted verification: a rule's pooled counts are its firings on the folds whose search proposed it
    # without seeing them, recomputed here from the fold files.
    folds = predictions["folds"]
    assert set(folds) == set(split["search"]) and set(folds.values()) == set(range(5))
    # A fold's candidates: its search's best set and its labels' most specific terms, both found without the fold.
    fold_keys = {k: {rule_key(a) for name in (FOLD_RULES, FOLD_TERMS)
                     for r in RuleSet.load(folder / name.format(k=k)) for a in atoms(r)} for k in range(5)}
    rules = RuleSet.load(folder / RULES)
    assert {rule_key(r) for r in rules} == set().union(*fold_keys.values())
    verdict = json.loads((folder / VERDICT).read_text(encoding="utf-8"))
    by_id = {v["rule_id"]: v for v in verdict["rules"]}
    engine = RuleEngine(table.rows(split["search"]), ["dialogue_intent"] * len(split["search"]))
    fired = engine.fire_matrix(list(rules))
    for j, rule in enumerate(rules):
        held = [i for n, i in enumerate(split["search"]) if fired[n, j] and rule_key(rule) in fold_keys[folds[i]]]
        stats = by_id[rule.id]["stats"]
        assert stats["support"] == len(held)
        assert stats["correct"] == sum(gold[i] == rule.label for i in held)
        assert by_id[rule.id]["folds"] == sum(rule_key(rule) in keys for keys in fold_keys.values())
    accepted = [v for v in verdict["rules"] if v["accepted"]]
    bars = verdict["config"]  # the step of the ladder the verifier settled on
    assert all(v["stats"]["support"] >= bars["min_support"] and v["stats"]["precision"] >= bars["min_precision"]
               and v["stats"]["precision_lower"] >= bars["min_precision_lower"] for v in accepted)

    # The arbiter is fitted on cross-fitted data; the test predictions it made are kept for the report.
    arbiter = json.loads((folder / ARBITER).read_text(encoding="utf-8"))
    assert arbiter["policy"] == "stacked"
    estimated = arbiter["estimated"]
    assert estimated["fixed"] + estimated["broken"] <= estimated["changed"]
    saved = json.loads((folder / TEST_PREDICTIONS).read_text(encoding="utf-8"))
    if estimated["delta_low"] <= 0:  # not shown to help on cross-fitted data: the decider decides alone
        assert arbiter["weights"] == {"dialogue_intent": 0.0} and saved["together"] == saved["decider"]
    assert saved["ids"] == [i for i in split["test"] if i in test_gold]
    assert abs(test["rules_with_fallback"]["accuracy"]
               - sum(p == test_gold[i] for i, p in zip(saved["ids"], saved["together"], strict=True))
               / len(saved["ids"])) < 1e-9
    assert set(test["precision"]) >= {"estimated", "realized", "estimated_coverage", "realized_coverage"}

    # The session is a model: eval --session --json has the documented shape and agrees with evaluation.json.
    result = CliRunner().invoke(app, ["eval", "--session", outcome.session_id, "--json"])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.output.strip().splitlines()[-1])
    assert scores["session"] == outcome.session_id and scores["n"] == test["n"]
    metric_keys = {"weighted_f1", "macro_f1", "accuracy", "coverage", "precision_where_fired"}
    for scope in (scores["tasks"]["dialogue_intent"], scores["overall"]):
        assert {"decider", "rules", "together"} <= set(scope)
        assert all(set(scope[m]) == metric_keys for m in ("decider", "rules", "together"))
    assert scores["tasks"]["dialogue_intent"]["n"] == test["n"]
    assert scores["overall"]["together"]["weighted_f1"] == test["rules_with_fallback"]["weighted_f1"]

    # ... and the predictor serves it by session id: decisions name their source, fired rules and the decider's
    # top labels, and agree with what the session decided on its test split.
    test_samples = [mdsirc.get(i) for i in saved["ids"]]
    with Predictor.load(outcome.session_id, home) as predictor:
        decisions = predictor.predict(test_samples)
    assert [d.label for d in decisions] == saved["together"]
    assert all(d.decider_top and d.source in ("decider", "stacked", "rule") for d in decisions)
