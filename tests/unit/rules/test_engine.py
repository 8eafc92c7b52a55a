"""The compiled engine gives exactly the answers of plain per-sample evaluation, on the real dialogues."""

from __future__ import annotations

import random

import numpy as np
import pytest

from kdsl.rules import Regex, Rule, RuleEngine, normalize, parse_rule
from kdsl.tools.features import FIELDS, SampleFeatures, dialogue_fields


@pytest.fixture(scope="module")
def dialogue_features(mdsirc):
    return [SampleFeatures(sample_id=s.id, **dialogue_fields(s)) for s in mdsirc.samples]


def _random_condition(rng: random.Random, texts: list[str], depth: int = 0) -> dict:
    """A random condition whose terms are real substrings of the data, so they do fire."""
    kind = rng.choice(["any_of", "all_of", "regex"] + (["not", "and", "or"] if depth < 2 else []))
    field = rng.choice(["user_text", "last_user_text", "agent_text", "all_text"])

    def term() -> str:
        t = ""
        while not normalize(t) or "\n" in t:
            text = rng.choice(texts)
            i = rng.randrange(max(1, len(text) - 2))
            t = text[i : i + rng.choice([1, 2, 3])]
        return t

    if kind in ("any_of", "all_of"):
        return {"field": field, kind: [term() for _ in range(rng.randint(1, 3))]}
    if kind == "regex":
        return {"field": field, "regex": rng.choice([f"{term()}.*{term()}", f"^{term()}", f"{term()}$", "\\d{3,}"])
                .replace("(", "").replace(")", "").replace("[", "").replace("*.*", ".*")}
    if kind == "not":
        return {"not": _random_condition(rng, texts, depth + 1)}
    return {kind: [_random_condition(rng, texts, depth + 1) for _ in range(rng.randint(2, 3))]}


def _safe_rule(rng, texts, i):
    while True:
        try:
            return parse_rule({"label": f"l{i % 7}", "task": "dialogue_intent", "when": _random_condition(rng, texts)})
        except ValueError:  # a random regex with a stray metacharacter: draw again
            continue


def test_engine_equals_plain_evaluation_on_real_data(mdsirc, dialogue_features):
    rng = random.Random(7)
    texts = [f.user_text for f in dialogue_features if f.user_text] + [f.agent_text for f in dialogue_features
                                                                       if f.agent_text]
    rules = [_safe_rule(rng, texts, i) for i in range(300)]
    engine = RuleEngine(dialogue_features, [s.task for s in mdsirc.samples])
    fired = engine.fire_matrix(rules)
    assert fired.shape == (705, 300)
    expected = np.zeros_like(fired)
    for i, (f, s) in enumerate(zip(dialogue_features, mdsirc.samples, strict=True)):
        normalized = {name: normalize(f.field(name)) for name in FIELDS}
        for j, r in enumerate(rules):
            expected[i, j] = s.task == r.task and r.when.matches(normalized)
    assert (fired == expected).all()
    # non-trivial: the random rules fire somewhere, and not everywhere
    assert 0.01 < fired[[s.task == "dialogue_intent" for s in mdsirc.samples]].mean() < 0.9
    assert not fired[[s.task == "image_scene" for s in mdsirc.samples]].any()  # a rule stays in its task
    # cached re-scoring returns the same matrix
    assert (engine.fire_matrix(rules) == fired).all()
    # the per-sample lists say the same, in the rules' order
    per_sample = engine.fired(rules)
    assert [[id(r) for r in row] for row in per_sample] == [[id(rules[j]) for j in np.flatnonzero(row)]
                                                            for row in fired]
    assert engine.fired([]) == [[] for _ in range(705)]


def test_predict_takes_the_most_confident_firing_rule(dialogue_features, mdsirc):
    engine = RuleEngine(dialogue_features, [s.task for s in mdsirc.samples])
    r1 = parse_rule({"label": "商品材质", "task": "dialogue_intent", "when": {"field": "user_text", "any_of": ["材质"]}})
    r2 = parse_rule({"label": "商品规格", "task": "dialogue_intent", "when": {"field": "user_text", "any_of": ["材"]}})
    pred = engine.predict([r1, r2], confidence=[0.9, 0.5])
    f1, f2 = engine.fires(r1), engine.fires(r2)
    assert f1.any() and (f2 & ~f1).any()
    labels = np.array(pred.labels, dtype=object)
    assert (labels[f1] == "商品材质").all()
    assert (labels[f2 & ~f1] == "商品规格").all()
    assert all(x is None for x in labels[~(f1 | f2)])
    assert pred.coverage == pytest.approx((f1 | f2).mean())
    flipped = engine.predict([r1, r2], confidence=[0.4, 0.5])
    assert (np.array(flipped.labels, dtype=object)[f2] == "商品规格").all()


def test_a_rule_that_cannot_apply_abstains_and_is_counted(dialogue_features, mdsirc):
    engine = RuleEngine(dialogue_features, [s.task for s in mdsirc.samples])
    good = parse_rule({"label": "x", "task": "dialogue_intent", "when": {"field": "user_text", "any_of": ["吗"]}})
    # parse_rule refuses such a rule, so build it unvalidated, the way corrupted stored data would arrive
    broken = Rule.model_construct(id="broken", label="x", task="dialogue_intent",
                                  when=Regex.model_construct(field="user_text", regex="(unclosed"))
    fired = engine.fire_matrix([good, broken])
    assert fired[:, 0].any() and not fired[:, 1].any()
    assert engine.fault_counts == {"broken": 1}
