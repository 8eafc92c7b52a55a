"""Pooling the statistics of equivalent rules measured in several sessions."""

from __future__ import annotations

import pytest
from _memory_rules import rule, stats

from kdsl.memory.evidence import dumps, loads, pool, with_measurement
from kdsl.rules import wilson_lower_bound


def test_pool_sums_counts_and_recomputes_rates():
    a, b = stats(10, 9, n=50, label_count=15), stats(30, 24, n=70, label_count=25)
    pooled = pool({"s1": a, "s2": b})
    assert (pooled.n, pooled.support, pooled.correct) == (120, 40, 33)
    assert pooled.precision == pytest.approx(33 / 40)
    assert pooled.coverage == pytest.approx(40 / 120)
    assert pooled.recall == pytest.approx(33 / 40)  # label counts 15 + 25, recovered from correct / recall
    assert pooled.precision_lower == pytest.approx(wilson_lower_bound(33, 40))
    assert pooled.overlaps == 2
    assert pool({"s1": a}) is a and pool({}) is None


def test_same_session_refreshes_other_session_adds():
    first = rule("商品材质", ["材质"], origin={"session": "s1"}, stats=stats(10, 9))
    again = rule("商品材质", ["材质"], origin={"session": "s1"}, stats=stats(12, 11))
    other = rule("商品材质", ["材质"], origin={"session": "s2"}, stats=stats(5, 5))
    evidence = with_measurement(with_measurement({}, first), again)
    assert list(evidence) == ["s1"] and evidence["s1"].support == 12
    evidence = with_measurement(evidence, other)
    assert pool(evidence).support == 17
    assert with_measurement(evidence, rule("商品材质", ["材质"])) == evidence  # no stats, nothing to add
    assert loads(dumps(evidence)) == evidence
