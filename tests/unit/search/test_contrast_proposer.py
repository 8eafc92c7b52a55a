"""The contrastive model-free author on the real MDSIRC dialogues: its terms come from the wrong example and single
out the example's label on the search samples, it widens a label's rule instead of piling up narrow ones, and the
rules it leads the search to hold up on held-out dialogues better than random substrings do."""

from __future__ import annotations

import numpy as np

from kdsl.agents.authors import ContrastProposer, NgramProposer
from kdsl.agents.verifier import majority_fallback
from kdsl.data import SplitConfig, split_dataset
from kdsl.rules import RuleEngine, RuleSet
from kdsl.rules.analysis import wilson_lower_bound
from kdsl.rules.condition import AnyOf
from kdsl.rules.metrics import score, with_fallback
from kdsl.rules.normalize import normalize
from kdsl.rules.rule import Rule
from kdsl.search import MCTS, SearchConfig, build_error_report
from kdsl.search.reward import Reward
from kdsl.tools.features import SampleFeatures, dialogue_fields

TASK = "dialogue_intent"


def _lower_bound(bench, rule: Rule) -> float:
    """Wilson lower bound of the rule's precision on the bench: a rule right once on its own source is not evidence."""
    fired = bench.engine.fire_matrix([rule])[:, 0]
    return wilson_lower_bound(int((np.array(bench.gold, dtype=object)[fired] == rule.label).sum()), int(fired.sum()))


def test_terms_come_from_the_example_and_single_out_its_label(bench) -> None:
    report = bench.report(RuleSet())
    texts = {e.sample_id: e.fields for e in (*report.uncovered, *report.misfired)}
    proposal = ContrastProposer(bench.engine, bench.gold).propose(RuleSet(), report, 8, seed=3)
    adds = [e for e in proposal.edits if e.op == "add"]
    assert len(adds) == 8
    for edit in adds:
        term = edit.rule.when.any_of[0]
        source = edit.rationale.split()[2].rstrip(":")
        assert term in normalize(texts[source]["user_text"])
        assert bench.engine.term_mask("user_text", term).sum() >= 2
    random_adds = [e for e in NgramProposer().propose(RuleSet(), report, 8, seed=3).edits if e.op == "add"]
    contrast = np.mean([_lower_bound(bench, e.rule) for e in adds])
    floor = np.mean([_lower_bound(bench, e.rule) for e in random_adds])
    assert contrast > floor + 0.04, (contrast, floor)  # measured 0.27 vs 0.21 (a 1/1 rule scores 0.21)


def test_widens_the_label_rule_instead_of_adding_a_narrow_one(bench) -> None:
    report = bench.report(RuleSet())
    label = report.uncovered[0].label
    seed_rule = Rule(label=label, task=TASK, when=AnyOf(field="user_text", any_of=("不会出现的词",)), statement="x")
    rules = RuleSet(rules=(seed_rule,))
    proposal = ContrastProposer(bench.engine, bench.gold).propose(rules, bench.report(rules), 16, seed=0)
    widened = [e for e in proposal.edits if e.op == "refine" and e.target == seed_rule.id]
    assert widened, [e.op for e in proposal.edits]
    for edit in widened:
        assert edit.rule.label == label and edit.rule.when.any_of[0] == "不会出现的词"
        assert len(edit.rule.when.any_of) == 2 and edit.rule.origin.parent == seed_rule.id


def test_its_rules_hold_up_on_held_out_dialogues(mdsirc) -> None:
    dataset = mdsirc.for_task(TASK)
    split = split_dataset(dataset, SplitConfig(seed=0))

    def part(name: str) -> tuple[RuleEngine, list[str]]:
        samples = [dataset.get(i) for i in split.ids(name)]
        feats = [SampleFeatures(sample_id=s.id, **dialogue_fields(s)) for s in samples]
        return RuleEngine(feats, [TASK] * len(samples)), [s.label for s in samples]

    (engine, gold), (held_engine, held_gold) = part("search"), part("verify")
    features = {f.sample_id: f for f in engine._features}
    majority = majority_fallback(gold, [TASK] * len(gold))[TASK]
    reward = Reward(engine, gold, [majority] * len(gold), task=TASK)

    def report(rules: RuleSet):
        return build_error_report(TASK, rules, engine, features, gold, [majority] * len(gold),
                                  dataset.label_spaces[TASK])

    held_f1 = {}
    for proposer in (NgramProposer(), ContrastProposer(engine, gold)):
        best = MCTS(SearchConfig(iterations=120, k=4, seed=0)).search(RuleSet(), proposer, reward, report).best_rules
        predicted = held_engine.predict(list(best.rules)).labels
        held_f1[proposer.name] = score(held_gold, with_fallback(list(predicted), [majority] * len(held_gold)))
    # Measured: 0.1423 vs 0.1316 (48 held-out dialogues, 23 labels; the margin is small, the direction is the point).
    assert held_f1["contrast"].weighted_f1 > held_f1["ngram"].weighted_f1, held_f1
