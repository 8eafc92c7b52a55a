"""The verifier's ladder: loosest bars first, each step at least as strict as the one before and as the session's."""

from __future__ import annotations

from pathlib import Path

from kdsl.graph.config import SessionConfig
from kdsl.graph.crossfit import ladder


def _strictness(bars) -> tuple:
    return bars.min_support, bars.min_precision_lower, bars.min_precision


def test_the_ladder_starts_at_the_session_bars_and_only_tightens():
    steps = ladder(SessionConfig(data=Path("d.csv")))
    assert _strictness(steps[0]) == (3, 0.3, 0.75)  # the defaults: the loosest bars
    assert len(steps) >= 5 and _strictness(steps[-1]) == (6, 0.6, 0.95)
    for before, after in zip(steps, steps[1:], strict=False):
        assert all(a >= b for a, b in zip(_strictness(after), _strictness(before), strict=True))
        assert _strictness(after) != _strictness(before)


def test_bars_the_user_sets_are_a_floor_and_no_target_means_no_ladder():
    steps = ladder(SessionConfig(data=Path("d.csv"), min_support=5, min_precision=0.9))
    assert all(s.min_support >= 5 and s.min_precision >= 0.9 for s in steps)
    assert len({_strictness(s) for s in steps}) == len(steps)  # steps that change nothing are left out
    assert [_strictness(s) for s in ladder(SessionConfig(data=Path("d.csv"), target_precision=None))] == [(3, 0.3, 0.75)]
