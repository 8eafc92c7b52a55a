"""Classification metrics with abstention, and a paired bootstrap for comparing two predictors.

F1 follows scikit-learn's `f1_score` (zero_division=0) over the labels that occur in the gold or the predictions;
an abstention (None) is a miss for the gold label and a false positive for nothing. The implementation works on
confusion counts with numpy so a bootstrap of a thousand resamples takes milliseconds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


def _encode(gold: Sequence[str], *preds: Sequence[str | None]) -> tuple[np.ndarray, list[np.ndarray], int]:
    """Integer codes over the labels that occur; abstention gets code n_labels (outside every label)."""
    labels = sorted({*gold, *(p for pred in preds for p in pred if p is not None)})
    index = {lab: i for i, lab in enumerate(labels)}
    abstain = len(labels)
    y = np.array([index[g] for g in gold], dtype=np.int64)
    ps = [np.array([index[p] if p is not None else abstain for p in pred], dtype=np.int64) for pred in preds]
    return y, ps, len(labels)


def _f1_from_codes(y: np.ndarray, p: np.ndarray, k: int, weights: np.ndarray | None = None) -> tuple[float, float]:
    """(weighted F1, macro F1) from integer codes; `weights` are per-sample counts (for bootstrap resamples)."""
    w = np.ones(len(y)) if weights is None else weights
    support = np.bincount(y, weights=w, minlength=k + 1)[:k]
    predicted = np.bincount(p, weights=w, minlength=k + 1)[:k]
    tp = np.bincount(y[p == y], weights=w[p == y], minlength=k + 1)[:k]
    denom = support + predicted
    f1 = np.divide(2 * tp, denom, out=np.zeros(k), where=denom > 0)
    present = (support + predicted) > 0  # labels absent from this resample do not enter the average
    total = support.sum()
    weighted = float((f1 * support).sum() / total) if total else 0.0
    macro = float(f1[present].mean()) if present.any() else 0.0
    return weighted, macro


class Scores(BaseModel):
    """How a predictor did on labeled samples. `coverage` is the share it did not abstain on."""

    model_config = ConfigDict(frozen=True)

    n: int
    coverage: float
    accuracy: float  # over all samples, an abstention counting as wrong
    accuracy_where_fired: float  # over the samples it did not abstain on (0 when it always abstained)
    weighted_f1: float
    macro_f1: float


def score(gold: Sequence[str], pred: Sequence[str | None]) -> Scores:
    """Scores of one predictor; `pred` may hold None for abstentions."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold labels but {len(pred)} predictions")
    if not gold:
        return Scores(n=0, coverage=0.0, accuracy=0.0, accuracy_where_fired=0.0, weighted_f1=0.0, macro_f1=0.0)
    y, (p,), k = _encode(gold, pred)
    fired = p != k
    weighted, macro = _f1_from_codes(y, p, k)
    return Scores(
        n=len(gold),
        coverage=float(fired.mean()),
        accuracy=float((p == y).mean()),
        accuracy_where_fired=float((p[fired] == y[fired]).mean()) if fired.any() else 0.0,
        weighted_f1=weighted,
        macro_f1=macro,
    )


def with_fallback(pred: Sequence[str | None], fallback: Sequence[str | None]) -> list[str | None]:
    """The prediction where it did not abstain, the fallback's elsewhere."""
    if len(pred) != len(fallback):
        raise ValueError(f"{len(pred)} predictions but {len(fallback)} fallback predictions")
    return [p if p is not None else f for p, f in zip(pred, fallback, strict=True)]


class PairedBootstrap(BaseModel):
    """metric(A) - metric(B) on the same samples, with a percentile confidence interval."""

    model_config = ConfigDict(frozen=True)

    metric: str
    a: float
    b: float
    delta: float
    low: float
    high: float
    confidence: float
    n_resamples: int
    p_a_not_better: float  # share of resamples where A does not beat B (a one-sided bootstrap p-value)

    @property
    def significant(self) -> bool:
        """The interval excludes zero."""
        return self.low > 0 or self.high < 0


def paired_bootstrap(
    gold: Sequence[str],
    pred_a: Sequence[str | None],
    pred_b: Sequence[str | None],
    *,
    metric: str = "weighted_f1",
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedBootstrap:
    """Resample samples with replacement (the same draw for A and B) and collect the metric difference."""
    metrics = {"weighted_f1": 0, "macro_f1": 1, "accuracy": 2}
    if metric not in metrics:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(metrics)}")
    if not (len(gold) == len(pred_a) == len(pred_b)) or not gold:
        raise ValueError("gold, pred_a and pred_b must be non-empty and of one length")
    y, (pa, pb), k = _encode(gold, pred_a, pred_b)

    def value(p: np.ndarray, w: np.ndarray | None) -> float:
        if metrics[metric] == 2:
            ww = np.ones(len(y)) if w is None else w
            return float(((p == y) * ww).sum() / ww.sum())
        return _f1_from_codes(y, p, k, w)[metrics[metric]]

    rng = np.random.default_rng(seed)
    counts = rng.multinomial(len(y), np.full(len(y), 1 / len(y)), size=n_resamples).astype(np.float64)
    deltas = np.array([value(pa, w) - value(pb, w) for w in counts])
    alpha = (1 - confidence) / 2
    a, b = value(pa, None), value(pb, None)
    return PairedBootstrap(
        metric=metric, a=a, b=b, delta=a - b,
        low=float(np.quantile(deltas, alpha)), high=float(np.quantile(deltas, 1 - alpha)),
        confidence=confidence, n_resamples=n_resamples, p_a_not_better=float((deltas <= 0).mean()),
    )


OOS_NAMES = frozenset({"oos", "out_of_scope", "out-of-scope", "outofscope", "out of scope"})


def find_oos_label(labels: Sequence[str], given: str | None = None) -> str | None:
    """The out-of-scope label of a label space: `given` (it must be one of the labels), else a label named oos /
    out_of_scope (any case), else None."""
    if given is not None:
        if given not in labels:
            raise ValueError(f"out-of-scope label {given!r} is not in the label space ({', '.join(labels[:8])}"
                             f"{', ...' if len(labels) > 8 else ''})")
        return given
    return next((lab for lab in labels if lab.strip().lower() in OOS_NAMES), None)


class OutOfScopeScores(BaseModel):
    """Out-of-scope data scored apart: how the in-scope samples fare, and how many out-of-scope ones are caught."""

    model_config = ConfigDict(frozen=True)

    label: str
    n_in_scope: int
    n_out_of_scope: int
    in_scope_accuracy: float = Field(description="Accuracy on the samples whose gold label is in scope.")
    out_of_scope_recall: float = Field(description="Share of the out-of-scope samples predicted out of scope.")
    out_of_scope_precision: float = Field(description="Share of out-of-scope predictions that are out of scope.")


def out_of_scope_scores(gold: Sequence[str], pred: Sequence[str | None], label: str) -> OutOfScopeScores:
    """In-scope accuracy and out-of-scope recall / precision (an abstention counts as wrong)."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold labels but {len(pred)} predictions")
    inside = [(g, p) for g, p in zip(gold, pred, strict=True) if g != label]
    outside = [p for g, p in zip(gold, pred, strict=True) if g == label]
    said_out = [g for g, p in zip(gold, pred, strict=True) if p == label]
    return OutOfScopeScores(
        label=label, n_in_scope=len(inside), n_out_of_scope=len(outside),
        in_scope_accuracy=sum(g == p for g, p in inside) / len(inside) if inside else 0.0,
        out_of_scope_recall=sum(p == label for p in outside) / len(outside) if outside else 0.0,
        out_of_scope_precision=sum(g == label for g in said_out) / len(said_out) if said_out else 0.0)
