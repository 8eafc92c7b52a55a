"""The term author's replies are untrusted: terms are normalised and the unusable ones dropped with a reason."""

from __future__ import annotations

import pytest

from kdsl.agents.authors.knowledge import KnowledgeTerms, clean_term, data_language, knowledge_rules
from kdsl.rules import RuleEngine
from kdsl.tools.features import SampleFeatures


@pytest.mark.parametrize(("raw", "term", "why"), [
    ("  Card  Arrival ", "card arrival", ""),
    ("my_card", "my card", ""),
    ("ＡＢＣ退款", "abc退款", ""),            # full-width letters folded, as the rule engine folds the text
    ("x", None, "too short"),
    ("12345", None, "digits or punctuation only"),
    ("!!", None, "digits or punctuation only"),
    ("a" * 25, None, "too long"),
    (7, None, "not text"),
])
def test_terms_are_normalised_or_dropped_with_a_reason(raw, term, why):
    assert clean_term(raw) == (term, why)


def test_the_language_asked_in_follows_the_data():
    assert data_language(["物流页面-物流异常页面", "我的快递怎么还没到"]) == "zh"
    assert data_language(["card_arrival", "my card has not arrived yet"]) == "en"


def test_model_terms_become_rules_that_match_whole_words():
    found = KnowledgeTerms(model="llama_cpp:m", terms={"card_arrival": ("arrive", "card not here")})
    rules = knowledge_rules(found, "intent", ("user_text",))
    assert [r.when.any_of[0] for r in rules] == ["arrive", "card not here"]
    rows = [SampleFeatures(sample_id="a", user_text="when will it arrive"),
            SampleFeatures(sample_id="b", user_text="it arrived yesterday"),  # 'arrive' is part of a longer word
            SampleFeatures(sample_id="c", user_text="my card not here yet")]
    fired = RuleEngine(rows, ["intent"] * 3).fire_matrix(rules)
    assert fired[:, 0].tolist() == [True, False, False] and fired[:, 1].tolist() == [False, False, True]


def test_the_asking_key_changes_with_what_the_replies_depend_on():
    from kdsl.agents.authors.knowledge import asking_key

    key = asking_key("llama_cpp:m", ["退款", "换货"], "zh")
    assert key == asking_key("llama_cpp:m", ["退款", "换货"], "zh-hans")  # the same Chinese prompt
    assert len({key, asking_key("llama_cpp:other", ["退款", "换货"], "zh"), asking_key("llama_cpp:m", ["退款"], "zh"),
                asking_key("llama_cpp:m", ["退款", "换货"], "en"),
                asking_key("llama_cpp:m", ["退款", "换货"], "zh", max_tokens=60)}) == 5
