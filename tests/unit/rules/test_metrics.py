"""Metrics agree with scikit-learn; the bootstrap behaves like one."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from kdsl.rules import (
    find_oos_label,
    out_of_scope_scores,
    paired_bootstrap,
    score,
    wilson_lower_bound,
    with_fallback,
)


def _random(seed, n=400, k=9, abstain=0.3):
    rng = np.random.default_rng(seed)
    labels = [f"c{i}" for i in range(k)]
    gold = [labels[i] for i in rng.integers(0, k - 2, n)]  # two labels only ever predicted
    pred = [labels[i] if rng.random() > abstain else None for i in rng.integers(0, k, n)]
    return gold, pred


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_f1_matches_sklearn_with_abstentions(seed):
    gold, pred = _random(seed)
    filled = [p if p is not None else "<abstain>" for p in pred]
    labels = sorted(set(gold) | {p for p in pred if p is not None})
    s = score(gold, pred)
    assert s.weighted_f1 == pytest.approx(f1_score(gold, filled, labels=labels, average="weighted", zero_division=0))
    assert s.macro_f1 == pytest.approx(f1_score(gold, filled, labels=labels, average="macro", zero_division=0))
    assert s.accuracy == pytest.approx(accuracy_score(gold, filled))
    assert s.coverage == pytest.approx(np.mean([p is not None for p in pred]))
    fired = [(g, p) for g, p in zip(gold, pred, strict=True) if p is not None]
    assert s.accuracy_where_fired == pytest.approx(np.mean([g == p for g, p in fired]))


def test_without_abstentions_equals_sklearn_default():
    gold, pred = _random(5, abstain=0.0)
    assert score(gold, pred).weighted_f1 == pytest.approx(f1_score(gold, pred, average="weighted"))
    assert score(gold, pred).macro_f1 == pytest.approx(f1_score(gold, pred, average="macro"))


def test_fallback_fills_abstentions_only():
    assert with_fallback(["a", None, "c"], ["x", "y", "z"]) == ["a", "y", "c"]


def test_wilson_lower_bound_reference_values():
    # Reference values from the closed form (Wilson 1927), z = 1.96.
    assert wilson_lower_bound(8, 10) == pytest.approx(0.4902, abs=1e-4)
    assert wilson_lower_bound(10, 10) == pytest.approx(0.7225, abs=1e-4)
    assert wilson_lower_bound(0, 0) == 0.0
    assert wilson_lower_bound(0, 5) == 0.0


def test_paired_bootstrap_sees_a_real_difference_and_no_difference():
    gold, pred = _random(3, abstain=0.0)
    better = [g if i % 2 else p for i, (g, p) in enumerate(zip(gold, pred, strict=True))]
    res = paired_bootstrap(gold, better, pred, n_resamples=500, seed=1)
    assert res.delta > 0 and res.low > 0 and res.significant
    assert res.a == pytest.approx(score(gold, better).weighted_f1)
    same = paired_bootstrap(gold, pred, pred, n_resamples=200)
    assert same.delta == 0 and same.low == 0 and same.high == 0 and not same.significant
    again = paired_bootstrap(gold, better, pred, n_resamples=500, seed=1)
    assert again == res


def test_out_of_scope_label_is_found_by_name_or_given():
    assert find_oos_label(["balance", "oos"]) == "oos"
    assert find_oos_label(["balance", "Out_Of_Scope"]) == "Out_Of_Scope"
    assert find_oos_label(["balance", "transfer"]) is None
    assert find_oos_label(["balance", "other"], "other") == "other"
    with pytest.raises(ValueError, match="'nope' is not in the label space"):
        find_oos_label(["balance", "other"], "nope")


def test_out_of_scope_scores_count_in_scope_accuracy_and_oos_recall():
    gold = ["a", "a", "b", "oos", "oos", "oos"]
    pred = ["a", "oos", "b", "oos", "a", None]
    s = out_of_scope_scores(gold, pred, "oos")
    assert (s.n_in_scope, s.n_out_of_scope) == (3, 3)
    assert s.in_scope_accuracy == pytest.approx(2 / 3)
    assert s.out_of_scope_recall == pytest.approx(1 / 3)  # an abstention is not a catch
    assert s.out_of_scope_precision == pytest.approx(1 / 2)
