"""The decider's in-memory score cache: bounded by `cache_limit`, oldest scores dropped first."""

from __future__ import annotations

import pytest

from kdsl.agents.decider import Decider, DeciderCard
from kdsl.data.sample import Sample, Turn
from kdsl.models.base import LabelScores
from kdsl.tools.features import SampleFeatures

LABELS = ("退款", "物流")


class CountingBackend:
    """Scores every label 0.0 and counts the prompts it was asked to score (the decider's only call)."""

    def __init__(self) -> None:
        self.calls = 0

    def score_labels(self, messages, labels, images=None) -> LabelScores:
        self.calls += 1
        return LabelScores(scores=dict.fromkeys(labels, 0.0), label_tokens=dict.fromkeys(labels, 1), prompt_tokens=1,
                           seconds=0.0)


def _samples(n: int) -> tuple[list[Sample], dict[str, SampleFeatures]]:
    samples = [Sample(id=f"s{i}", task="t", turns=(Turn(role="user", text=f"第{i}单"),)) for i in range(n)]
    return samples, {s.id: SampleFeatures(sample_id=s.id, user_text=s.turns[0].text) for s in samples}


def _decider(cache_limit: int | None) -> tuple[Decider, CountingBackend]:
    backend = CountingBackend()
    card = DeciderCard(name="d", base_model="none", tasks=("t",), label_spaces={"t": LABELS})
    return Decider(backend, card, cache_limit=cache_limit), backend  # type: ignore[arg-type]


def test_the_oldest_scores_go_first_beyond_the_limit():
    decider, backend = _decider(cache_limit=2)
    samples, features = _samples(3)
    decider.log_likelihoods(samples, features)
    assert backend.calls == 3
    decider.log_likelihoods(samples[1:], features)  # the two newest are still cached
    assert backend.calls == 3
    decider.log_likelihoods(samples[:1], features)  # the oldest was dropped: scored again
    assert backend.calls == 4


def test_no_limit_keeps_every_score_and_zero_keeps_none():
    samples, features = _samples(3)
    unbounded, backend = _decider(cache_limit=None)
    unbounded.log_likelihoods(samples, features)
    unbounded.log_likelihoods(samples, features)
    assert backend.calls == 3
    uncached, backend = _decider(cache_limit=0)
    assert len(uncached.log_likelihoods(samples, features)) == 3
    uncached.log_likelihoods(samples, features)
    assert backend.calls == 6


def test_lowering_the_limit_drops_scores_at_once():
    decider, backend = _decider(cache_limit=None)
    samples, features = _samples(3)
    decider.log_likelihoods(samples, features)
    decider.cache_limit = 1
    decider.log_likelihoods(samples[2:], features)
    assert backend.calls == 3
    decider.log_likelihoods(samples[:2], features)
    assert backend.calls == 5
    with pytest.raises(ValueError, match="-1"):
        decider.cache_limit = -1
