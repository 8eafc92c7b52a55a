"""The files of a session folder, and how they are read and written (atomically: a kill never leaves half a file).

Everything that reads a session (the graph's nodes, the catalog, the report, `kdsl eval --session`) names its files
from here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from kdsl._internal._atomic import write_json_atomic as write_json
from kdsl.rules import RuleSet

__all__ = ["read_json", "save_rules", "write_json"]

CONFIG, CHECKPOINTS = "config.json", "checkpoints.sqlite"
# Files of a session folder.
SPLIT, FEATURES, GOLD, RULES, PROGRESS, SEARCH = (
    "split.json", "features.jsonl", "gold.json", "rules.json", "progress.json", "search.json")
VERDICT, EVALUATION, REPORT, EVENTS, COMMITTED = (
    "verdict.json", "evaluation.json", "report.json", "events.jsonl", "committed.json")
# The session's decider (a deployable `features` decider folder) and its predictions on each part: out-of-fold on
# search, from the final fit on verify and test.
DECIDER_DIR, DECIDER_PREDICTIONS = "decider", "decider_predictions.json"
# Cross-fitting: each fold's search writes its best rule set and tree; the fitted arbiter; the test predictions.
FOLD_RULES, FOLD_SEARCH, FOLD_TERMS = "rules.fold{k}.json", "search.fold{k}.json", "terms.fold{k}.json"
INNER_RULES = "rules.fold{k}-{j}.json"  # candidates found without folds k and j: for the nested estimate
ARBITER, TEST_PREDICTIONS = "arbiter.json", "test_predictions.json"
KNOWLEDGE = "knowledge_terms.json"  # the term author's terms per label name (`--term-author`), asked once
KNOWLEDGE_CACHE = "knowledge-terms"  # under the cache dir: the same terms for every session on the same labels


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def save_rules(rules: RuleSet, path: Path) -> Path:
    tmp = rules.save(path.with_name(path.name + ".tmp"))
    os.replace(tmp, path)
    return path
