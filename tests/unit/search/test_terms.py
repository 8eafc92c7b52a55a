"""Candidate terms of the model-free author: words and phrases in English, n-grams of Chinese runs."""

from __future__ import annotations

from kdsl.agents.authors.mined import candidate_terms, label_name_rules, label_terms, name_terms
from kdsl.rules.normalize import normalize


def test_english_terms_are_words_and_phrases_never_fragments_or_stopwords():
    terms = candidate_terms(normalize("I want to cancel my order, it's been 3 days"))
    assert {"cancel", "order", "days", "cancel my", "my order", "3 days"} <= set(terms)
    assert not {"i", "want", "to", "it's", "3", "ncel", "canc", "rder"} & set(terms)
    words = normalize("I want to cancel my order, it's been 3 days").replace(",", "").split()
    for term in terms:  # every term is a whole word or two adjacent whole words
        parts = term.split(" ")
        assert all(p in words for p in parts)


def test_chinese_terms_are_ngrams_of_cjk_runs():
    terms = candidate_terms(normalize("退款怎么还没到？88VIP"))
    assert {"退款", "怎么", "退款怎么", "还没到"} <= set(terms)
    assert "88vip" in terms
    assert not any("？" in t or "?" in t for t in terms)
    assert all(2 <= len(t) <= 4 for t in terms if t != "88vip")


def test_label_terms_rank_each_labels_most_specific_terms():
    texts = ["my card has not arrived", "when will my card arrive", "card not arrived yet",
             "cancel the transfer please", "how do i cancel a transfer", "my transfer failed"]
    gold = ["card_arrival"] * 3 + ["cancel_transfer"] * 2 + ["failed_transfer"]
    rules = label_terms({"user_text": [normalize(t) for t in texts]}, gold, "intent", per_label=3, min_support=2,
                        min_lower=0.3)
    by_label: dict[str, list[str]] = {}
    for r in rules:
        assert r.task == "intent" and len(r.when.any_of) == 1
        by_label.setdefault(r.label, []).append(r.when.any_of[0])
    assert by_label["card_arrival"][0] == "card"  # in all three, and nowhere else
    assert "cancel" in by_label["cancel_transfer"]
    assert "transfer" not in by_label.get("cancel_transfer", [])  # shared with another label: not specific
    assert "failed_transfer" not in by_label  # one sample: below the support asked for


def test_name_terms_keep_only_what_tells_a_label_from_the_others():
    terms = name_terms(["card_arrival", "card_linking", "exchange_rate", "card_payment_wrong_exchange_rate",
                        "物流页面-物流异常页面", "物流页面-物流跟踪页面", "退款页面"])
    assert {"arrival", "card arrival"} <= set(terms["card_arrival"])
    assert "card" not in terms["card_arrival"]  # three names hold it
    assert terms["exchange_rate"] == []  # every term of it is in card_payment_wrong_exchange_rate too
    assert {"异常", "物流异常"} <= set(terms["物流页面-物流异常页面"])
    assert not {"物流", "页面"} & set(terms["物流页面-物流异常页面"])
    assert {"退款"} <= set(terms["退款页面"])


def test_label_name_rules_are_one_term_rules_per_field():
    rules = label_name_rules(["card_arrival", "card_linking"], "intent", ("user_text", "image_text"))
    assert {(r.label, r.when.field, r.when.any_of) for r in rules} >= {
        ("card_arrival", "user_text", ("arrival",)), ("card_linking", "image_text", ("linking",))}
    assert all(r.origin.author == "label-names" and len(r.when.any_of) == 1 for r in rules)
