"""The simplest strong baseline a session is shown beside: character n-gram TF-IDF and logistic regression over
all of a sample's text (dialogue, OCR), fitted on the same training samples as the decider."""

from __future__ import annotations

from collections.abc import Sequence


def char_tfidf_lr(train_texts: Sequence[str], train_labels: Sequence[str], test_texts: Sequence[str]) -> list[str]:
    """Fit on the training texts, label the test texts (one label when training has only one)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    if len(set(train_labels)) < 2 or not any(t.strip() for t in train_texts):
        # Nothing to learn from (one label, or no text: images without OCR): the majority label.
        majority = max(sorted(set(train_labels)), key=list(train_labels).count) if train_labels else ""
        return [majority] * len(test_texts)
    model = make_pipeline(TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), sublinear_tf=True),
                          LogisticRegression(C=10, max_iter=1000))
    model.fit([t or " " for t in train_texts], list(train_labels))
    return [str(p) for p in model.predict([t or " " for t in test_texts])]
