"""The session graph's state: ids, paths and scores only (arrays, images and models stay out of checkpoints)."""

from __future__ import annotations

from typing import TypedDict


class SessionState(TypedDict, total=False):
    """What the nodes pass on. Each node returns only the keys it sets."""

    session_id: str
    session_dir: str
    task: str
    # prepare
    split_path: str
    features_path: str
    gold_path: str
    n_search: int
    n_verify: int
    n_test: int
    decider_cv_accuracy: float
    decider_seconds: float
    # discover
    rules_path: str
    iterations: int
    initial_reward: float
    best_reward: float
    tokens: int
    n_rules: int
    stop_reason: str
    # verify / review / commit
    verdict_path: str
    accepted: list[str]
    reviewed: bool
    committed: list[str]
    arbiter_weights: dict[str, float]
    arbiter_estimate: dict[str, float]
    # evaluate / report
    test_scores: dict[str, float]
    report_path: str
