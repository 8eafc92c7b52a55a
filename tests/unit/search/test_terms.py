"""Candidate terms of the model-free author: words and phrases in English, n-grams of Chinese runs."""

from __future__ import annotations

from kdsl.rules.normalize import normalize
from kdsl.search.terms import candidate_terms


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
