"""Terms match as whole words in English and as substrings in Chinese, the same in the engine and in the
reference evaluation."""

from __future__ import annotations

import pytest

from kdsl.rules import RuleEngine
from kdsl.rules.condition import AnyOf
from kdsl.rules.normalize import contains_term, normalize
from kdsl.tools.features import SampleFeatures

CASES = [
    ("I want to cancel my order", "cancel", True),
    ("what is the cancellation fee", "cancel", False),  # a fragment of a longer word does not match
    ("Cancel!", "cancel", True),
    ("please cancel.", "cancel", True),
    ("my card was declined", "card", True),
    ("my cards were declined", "card", False),
    ("top up my account", "top up", True),
    ("topup my account", "top up", False),
    ("it's 88VIP会员", "88vip", True),
    ("在淘宝app上退款", "app", True),  # Chinese around a Latin word is a boundary
    ("在淘宝app上退款", "退款", True),
    ("退款怎么还没到", "款怎", True),  # Chinese terms match as substrings
    ("退货退款详情", "退款", True),
    ("apple", "app", False),
]


@pytest.mark.parametrize(("text", "term", "expected"), CASES)
def test_reference_and_engine_agree_on_words(text: str, term: str, expected: bool):
    assert contains_term(normalize(text), normalize(term)) is expected
    assert AnyOf(field="user_text", any_of=(term,)).matches({"user_text": normalize(text)}) is expected
    rows = [SampleFeatures(sample_id="a", task="t", user_text="cancellation and cards"),
            SampleFeatures(sample_id="b", task="t", user_text=text)]
    engine = RuleEngine(rows, ["t", "t"])
    assert engine.term_mask("user_text", term).tolist() == [
        contains_term(normalize("cancellation and cards"), normalize(term)), expected]


def test_a_word_glued_to_a_later_occurrence_still_matches():
    # The first occurrence is inside a word, the second stands alone: the engine must look past the first.
    engine = RuleEngine([SampleFeatures(sample_id="a", task="t", user_text="cancellation, then cancel it")], ["t"])
    assert engine.term_mask("user_text", "cancel").tolist() == [True]


def test_atoms_split_a_term_list_into_one_rule_per_term_with_content_ids():
    from kdsl.rules import Rule, atoms

    rule = Rule(id="mine", label="L", task="t", when=AnyOf(field="user_text", any_of=("refund", "退款", "refund")))
    parts = atoms(rule)
    assert [p.when.any_of for p in parts] == [("refund",), ("退款",)]
    assert all(p.origin.parent == "mine" and p.id.startswith("r-") for p in parts)
    again = atoms(Rule(label="L", task="t", when=AnyOf(field="user_text", any_of=("退款",))))
    assert again[0].id == parts[1].id  # the same term for the same label is one atom, whoever wrote it
