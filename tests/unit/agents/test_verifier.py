"""The verifier on real dialogues: statistics an independent computation reproduces, and its verdicts."""

from __future__ import annotations

import math

import pytest

from kdsl.agents.verifier import Verifier, VerifierConfig, majority_fallback
from kdsl.rules import RuleEngine, RuleSet, normalize
from kdsl.tools.features import SampleFeatures, dialogue_fields

EXAMPLES = __import__("pathlib").Path(__file__).resolve().parents[3] / "examples" / "rules"


@pytest.fixture(scope="module")
def dialogues(mdsirc):
    ds = mdsirc.for_task("dialogue_intent")
    return ds, [SampleFeatures(sample_id=s.id, **dialogue_fields(s)) for s in ds.samples]


def test_statistics_match_an_independent_count(dialogues):
    ds, feats = dialogues
    rules = RuleSet.load(EXAMPLES / "mdsirc_dialogue_intent.json")
    engine = RuleEngine(feats, [s.task for s in ds.samples])
    verdict = Verifier().check(rules, engine, [s.label for s in ds.samples], split="all")
    import re2

    def fires(rule, f):  # by hand: the rule files here are one any_of or one regex on user_text
        text = normalize(f.user_text)
        if "any_of" in rule["when"]:
            return any(normalize(t) in text for t in rule["when"]["any_of"])
        return re2.search(rule["when"]["regex"], text) is not None

    raw = __import__("json").loads((EXAMPLES / "mdsirc_dialogue_intent.json").read_text(encoding="utf-8"))["rules"]
    hits = [[fires(r, f) for r in raw] for f in feats]
    for j, (r, v) in enumerate(zip(raw, verdict.rules, strict=True)):
        col = [h[j] for h in hits]
        support = sum(col)
        correct = sum(c and s.label == r["label"] for c, s in zip(col, ds.samples, strict=True))
        n_label = sum(s.label == r["label"] for s in ds.samples)
        others = [[h[k] for h in hits] for k in range(len(raw)) if k != j]
        overlaps = sum(col[i] and any(o[i] for o in others) for i in range(len(feats)))
        conflicts = sum(col[i] and any(hits[i][k] and raw[k]["label"] != r["label"] for k in range(len(raw)))
                        for i in range(len(feats)))
        s = v.stats
        assert (s.n, s.support, s.correct, s.overlaps, s.conflicts) == (len(feats), support, correct, overlaps,
                                                                        conflicts), r["label"]
        assert s.precision == (correct / support if support else 0.0)
        assert s.recall == correct / n_label
        assert s.coverage == support / len(feats)
        p, n, z = correct / support, support, 1.96
        lb = (p + z * z / (2 * n) - z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / (1 + z * z / n)
        assert s.precision_lower == pytest.approx(max(lb, 0.0))
    assert sum(v.stats.support for v in verdict.rules) > 20  # the hand-written rules do fire on the real data


def test_verdicts_and_task_scores(dialogues):
    ds, feats = dialogues
    rules = RuleSet.load(EXAMPLES / "mdsirc_dialogue_intent.json")
    engine = RuleEngine(feats, [s.task for s in ds.samples])
    gold = [s.label for s in ds.samples]
    strict = Verifier(VerifierConfig(min_support=5, min_precision_lower=0.6)).check(rules, engine, gold)
    lenient = Verifier(VerifierConfig(min_support=1, min_precision_lower=0.0)).check(rules, engine, gold)
    assert set(strict.accepted) < set(lenient.accepted)
    for v in strict.rules:
        assert v.accepted == (v.stats.support >= 5 and v.stats.precision_lower >= 0.6), v.reason
    (task,) = strict.tasks
    assert task.task == "dialogue_intent" and task.fallback_name == "majority label"
    majority = majority_fallback(gold, [s.task for s in ds.samples])["dialogue_intent"]
    assert majority == "适用季节"
    assert task.fallback.weighted_f1 < task.rules_with_fallback.weighted_f1
    assert task.bootstrap.delta == pytest.approx(task.rules_with_fallback.weighted_f1 - task.fallback.weighted_f1)
    assert task.bootstrap.low > 0  # hand-written rules beat the majority label, beyond resampling noise
    assert 0 < task.rules.coverage < 0.6 and task.rules.accuracy_where_fired > 0.6
