"""Deciders against simple baselines, side by side in one run, on data none of them was fitted on.

    .venv/bin/python benchmarks/quality.py                       # everything (about 30-40 min on 2 cores, cold)
    .venv/bin/python benchmarks/quality.py --datasets mdsirc     # MDSIRC only: 5-fold CV + the sealed test split
    .venv/bin/python benchmarks/quality.py --datasets banking77 clinc150 --shots 10 --seeds 0
    .venv/bin/python benchmarks/quality.py --gemma    # also `features+gemma` (kdsl models pull embeddinggemma-300m)

- MDSIRC (both tasks, and overall = the mean of the tasks, as the challenge scores it): 5-fold stratified
  cross-validation over the 705 samples (seed 0; every method sees the same folds), then the sealed test split of
  the default split (fitted on its search part).
- Banking77 and CLINC150: k labeled examples per intent (k = 5, 10; seeds 0-2) drawn from the training data,
  scored on the full test set, pooled over seeds. CLINC150 keeps its 100 out-of-scope training queries (label `oos`)
  in every training set, as its paper does, and reports in-scope accuracy and out-of-scope recall.

Methods: majority label; char TF-IDF + logistic regression (all text); multilingual-e5 + logistic regression (all
text, C by 3-fold CV); the `features` decider (kdsl's CPU default); with --gemma the same decider that may also
use EmbeddingGemma-300M blocks (KDSL_GEMMA=1), named `features+gemma`; a saved LoRA decider on the sealed test
(`--lora-decider NAME`), since training one per fold is hours on a CPU. Every figure has a 95% bootstrap CI; each
decider gets a paired bootstrap CI of its difference to the best baseline of the same run. Nothing here is chosen
by looking at a test fold: the decider picks its blocks, C and temperature by CV inside each training fold.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from kdsl.agents.decider_kinds import default_encoders
from kdsl.agents.feature_decider import FeatureDecider, FeatureDeciderConfig
from kdsl.config import Settings
from kdsl.data import Sample, SplitConfig, k_shot, load_dataset, split_dataset
from kdsl.tools.features import FeatureTable
from kdsl.tools.pipeline import default_builder

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
BASELINES = ("majority", "tfidf+lr", "e5+lr")
# A method fits on the first list and predicts the second: (labels, fit seconds, predict seconds).
Predict = Callable[[list[Sample], list[Sample]], tuple[list[str], float, float]]


# --- metrics --------------------------------------------------------------------------------------------------

def _f1s(gold: np.ndarray, pred: np.ndarray, k: int) -> tuple[float, float, float]:
    """(weighted F1, macro F1, accuracy) from integer labels; macro over the gold classes present."""
    cm = np.bincount(gold * k + pred, minlength=k * k).reshape(k, k)
    tp = np.diag(cm).astype(float)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    f1 = np.divide(2 * tp, support + predicted, out=np.zeros(k), where=(support + predicted) > 0)
    present = support > 0
    return (float((f1 * support).sum() / support.sum()), float(f1[present].mean()), float(tp.sum() / len(gold)))


class Scored:
    """Gold and predicted labels of one method on one pool of test samples (one task), as integers."""

    def __init__(self, gold: Sequence[str], pred: Sequence[str], labels: Sequence[str]):
        index = {lab: i for i, lab in enumerate(labels)}
        self.k = len(labels)
        self.gold = np.array([index[g] for g in gold])
        self.pred = np.array([index.get(p, self.k - 1) for p in pred])

    def metrics(self, idx: np.ndarray | None = None) -> np.ndarray:
        g, p = (self.gold, self.pred) if idx is None else (self.gold[idx], self.pred[idx])
        return np.array(_f1s(g, p, self.k))


def bootstrap(per_task: list[tuple[Scored, Scored | None]], n: int, seed: int = 0):
    """Point value, 95% CI of (wF1, macro F1, acc) averaged over tasks; and of the paired difference a - b."""
    rng = np.random.default_rng(seed)
    point = np.mean([a.metrics() for a, _ in per_task], axis=0)
    diff_point = (np.mean([a.metrics() - b.metrics() for a, b in per_task], axis=0)
                  if all(b is not None for _, b in per_task) else None)
    draws, diffs = [], []
    for _ in range(n):
        m, d = [], []
        for a, b in per_task:
            idx = rng.integers(0, len(a.gold), len(a.gold))  # resampled within each task, paired across methods
            ma = a.metrics(idx)
            m.append(ma)
            if b is not None:
                d.append(ma - b.metrics(idx))
        draws.append(np.mean(m, axis=0))
        if diff_point is not None:
            diffs.append(np.mean(d, axis=0))
    lo, hi = np.percentile(draws, [2.5, 97.5], axis=0)
    out = {"point": point.tolist(), "low": lo.tolist(), "high": hi.tolist()}
    if diff_point is not None:
        dlo, dhi = np.percentile(diffs, [2.5, 97.5], axis=0)
        out["diff"] = {"point": diff_point.tolist(), "low": dlo.tolist(), "high": dhi.tolist()}
    return out


# --- methods --------------------------------------------------------------------------------------------------

def all_text(features: FeatureTable, s: Sample) -> str:
    return features[s.id].all_text


def _timed(fit: Callable[[], object], predict: Callable[[], list[str]]) -> tuple[list[str], float, float]:
    t0 = time.perf_counter()
    fit()
    t1 = time.perf_counter()
    pred = predict()
    return list(pred), t1 - t0, time.perf_counter() - t1


def majority(train: list[Sample], test: list[Sample]) -> tuple[list[str], float, float]:
    label = Counter(s.label for s in train).most_common(1)[0][0]
    return [label] * len(test), 0.0, 0.0


def tfidf_lr(features: FeatureTable) -> Predict:
    def run(train: list[Sample], test: list[Sample]):
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        model = make_pipeline(TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), sublinear_tf=True),
                              LogisticRegression(C=10, max_iter=1000))
        return _timed(lambda: model.fit([all_text(features, s) for s in train], [s.label for s in train]),
                      lambda: model.predict([all_text(features, s) for s in test]))
    return run


def e5_lr(features: FeatureTable, embedder) -> Predict:
    def embed(samples: list[Sample]) -> np.ndarray:
        return embedder.embed([all_text(features, s)[:1000] or " " for s in samples])

    def run(train: list[Sample], test: list[Sample]):
        from sklearn.linear_model import LogisticRegressionCV
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        y = [s.label for s in train]
        folds = max(2, min(3, min(Counter(y).values())))
        model = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=[0.01, 0.1, 1.0], cv=folds, max_iter=1000))
        return _timed(lambda: model.fit(embed(train), y), lambda: model.predict(embed(test)))
    return run


def per_task(method: Predict) -> Predict:
    """A baseline fitted on each task's samples alone, as one would for one task (it never predicts another task's
    labels)."""
    def run(train: list[Sample], test: list[Sample]):
        pred: dict[str, str] = {}
        fit_s = predict_s = 0.0
        for task in dict.fromkeys(s.task for s in test):
            rows = [s for s in test if s.task == task]
            labels, f, p = method([s for s in train if s.task == task], rows)
            pred.update(zip((s.id for s in rows), labels, strict=True))
            fit_s, predict_s = fit_s + f, predict_s + p
        return [pred[s.id] for s in test], fit_s, predict_s
    return run


def baselines(features: FeatureTable, embedder) -> dict[str, Predict]:
    return {"majority": per_task(majority), "tfidf+lr": per_task(tfidf_lr(features)),
            "e5+lr": per_task(e5_lr(features, embedder))}


def features_decider(features: FeatureTable, encoders, label_spaces: dict, seed: int) -> Predict:
    def run(train: list[Sample], test: list[Sample]):
        decider = FeatureDecider(FeatureDeciderConfig(seed=seed), encoders)
        return _timed(lambda: decider.fit(train, features, label_spaces),
                      lambda: [d.best for d in decider.predict(test, features)])
    return run


# --- runs -----------------------------------------------------------------------------------------------------

class Pool:
    """Predictions of every method, pooled over folds or seeds, per task; with timings."""

    def __init__(self):
        self.gold: dict[str, list[str]] = {}
        self.pred: dict[str, dict[str, list[str]]] = {}
        self.fit_s: dict[str, list[float]] = {}
        self.ms: dict[str, list[float]] = {}

    def run(self, methods: dict[str, Predict], train: list[Sample], test: list[Sample]) -> None:
        for task in dict.fromkeys(s.task for s in test):
            self.gold.setdefault(task, []).extend(s.label for s in test if s.task == task)
        for name, method in methods.items():
            pred, fit_s, predict_s = method(train, test)
            self.fit_s.setdefault(name, []).append(fit_s)
            self.ms.setdefault(name, []).append(1000 * predict_s / max(1, len(test)))
            for task in dict.fromkeys(s.task for s in test):
                self.pred.setdefault(name, {}).setdefault(task, []).extend(
                    p for p, s in zip(pred, test, strict=True) if s.task == task)


def report(title: str, pool: Pool, label_spaces: dict, n_boot: int, extra: Callable[[str], str] | None = None) -> dict:
    tasks = list(pool.gold)
    scored = {m: {t: Scored(pool.gold[t], pool.pred[m][t], [*label_spaces[t], "(other)"]) for t in tasks}
              for m in pool.pred}
    base = [m for m in BASELINES if m in scored]
    out: dict = {"title": title, "n": {t: len(pool.gold[t]) for t in tasks}, "best_baseline": {}, "methods": {}}
    print(f"\n## {title}  (n = {', '.join(f'{t} {len(pool.gold[t])}' for t in tasks)})")
    scopes = [(t, [t]) for t in tasks] + ([("overall", tasks)] if len(tasks) > 1 else [])
    for scope, ts in scopes:
        # The best baseline of this scope (each task, or the mean of the tasks), by weighted F1.
        best = max(base, key=lambda m: np.mean([scored[m][t].metrics()[0] for t in ts]))
        out["best_baseline"][scope] = best
        print(f"{scope} (best baseline: {best}):")
        print(f"  {'method':10s} {'weighted F1 [95% CI]':26s} {'macro F1 [95% CI]':26s} {'accuracy [95% CI]':26s} "
              f"{'wF1 - best baseline [paired 95% CI]':38s} fit s, predict ms/sample")
        for m in scored:
            paired = m not in base
            b = bootstrap([(scored[m][t], scored[best][t] if paired else None) for t in ts], n_boot)
            cells = [f"{b['point'][i]:.3f} [{b['low'][i]:.3f}, {b['high'][i]:.3f}]" for i in range(3)]
            diff = ""
            if "diff" in b:
                d = b["diff"]
                diff = f"{d['point'][0]:+.3f} [{d['low'][0]:+.3f}, {d['high'][0]:+.3f}]"
            more = extra(m) if extra and scope != "overall" else ""
            print(f"  {m:10s} {cells[0]:26s} {cells[1]:26s} {cells[2]:26s} {diff:38s} "
                  f"{np.mean(pool.fit_s[m]):.1f} s, {np.mean(pool.ms[m]):.2f} ms{more}")
            out["methods"].setdefault(m, {})[scope] = b
    return out


def mdsirc(settings: Settings, encoders, folds: int, n_boot: int, lora: str | None, gemma=None) -> list[dict]:
    from sklearn.model_selection import StratifiedKFold

    dataset = load_dataset(DATA / "www2025-mdsirc")
    features = default_builder(settings, images=True, progress=False).build(dataset.samples)
    samples = list(dataset.samples)
    methods = {**baselines(features, encoders.embedder),
               "features": features_decider(features, encoders, dataset.label_spaces, seed=0)}
    if gemma is not None:
        methods["features+gemma"] = features_decider(features, gemma, dataset.label_spaces, seed=0)
    results = []
    cv = Pool()
    strata = [f"{s.task}:{s.label}" for s in samples]
    for i, (tr, te) in enumerate(StratifiedKFold(folds, shuffle=True, random_state=0).split(samples, strata)):
        print(f"MDSIRC fold {i + 1}/{folds} ...", flush=True)
        cv.run(methods, [samples[j] for j in tr], [samples[j] for j in te])
    results.append(report(f"MDSIRC {folds}-fold CV over {len(samples)} samples", cv, dataset.label_spaces, n_boot))

    split = split_dataset(dataset, SplitConfig(seed=0))
    sealed = Pool()
    test = [dataset.get(i) for i in split.test]
    sealed.run(methods, [dataset.get(i) for i in split.search], test)
    if lora:
        sealed.pred["lora"] = _lora_predictions(lora, settings, test)
        sealed.fit_s["lora"], sealed.ms["lora"] = [float("nan")], [float("nan")]
    results.append(report("MDSIRC sealed test split (fitted on search, default split seed 0)", sealed,
                          dataset.label_spaces, n_boot))
    return results


def _lora_predictions(name: str, settings: Settings, test: list[Sample]) -> dict[str, list[str]]:
    """A saved LoRA decider's top labels on the sealed test (its cached scores make this quick after `kdsl eval`)."""
    from kdsl.agents.decider import decider_folder
    from kdsl.training.workflow import load_trained

    decider, prepared = load_trained(decider_folder(name, settings), settings, progress=False, threads=1)
    if tuple(prepared.split.test) and set(prepared.split.test) != {s.id for s in test if s.task in decider.card.tasks}:
        print(f"note: {name} was trained on another split; its test predictions are on its own split's test samples")
    dists = decider.predict([s for s in test if s.task in decider.card.tasks], prepared.features)
    by_id = {d.sample_id: d.best for d in dists}
    out: dict[str, list[str]] = {}
    for s in test:
        out.setdefault(s.task, []).append(by_id.get(s.id, "(other)"))
    return out


def few_shot(name: str, settings: Settings, encoders, shots: Sequence[int], seeds: Sequence[int],
             n_boot: int, gemma=None) -> list[dict]:
    if name == "banking77":
        full = load_dataset(DATA / "banking77")
        train_ids = [s.id for s in full.samples if s.meta.get("split") == "train"]
        test_ids = [s.id for s in full.samples if s.meta.get("split") == "test"]
        always: list[str] = []
    else:
        full = load_dataset(DATA / "clinc150")
        train_ids = [s.id for s in full.samples if s.meta.get("split") == "train" and s.meta.get("oos") == "false"]
        test_ids = [s.id for s in full.samples if s.meta.get("split") == "test"]
        always = [s.id for s in full.samples if s.meta.get("split") == "train" and s.meta.get("oos") == "true"]
    features = default_builder(settings, images=False, progress=False).build(
        [full.get(i) for i in dict.fromkeys([*train_ids, *always, *test_ids])])
    encoders_text = type(encoders)(encoders.embedder, None)
    test = [full.get(i) for i in test_ids]
    results = []
    for k in shots:
        pool = Pool()
        for seed in seeds:
            print(f"{name} {k}-shot seed {seed} ...", flush=True)
            train = [full.get(i) for i in [*k_shot(full, k, ids=train_ids, seed=seed), *always]]
            methods = {**baselines(features, encoders.embedder),
                       "features": features_decider(features, encoders_text, full.label_spaces, seed=seed)}
            if gemma is not None:
                methods["features+gemma"] = features_decider(
                    features, type(gemma)(gemma.embedder, None, gemma.gemma), full.label_spaces, seed=seed)
            pool.run(methods, train, test)
        extra = _oos_columns(pool) if name == "clinc150" else None
        results.append(report(f"{name} {k} per intent, seeds {list(seeds)} pooled (test {len(test)} x {len(seeds)})",
                              pool, full.label_spaces, n_boot, extra))
    return results


def _oos_columns(pool: Pool) -> Callable[[str], str]:
    def extra(method: str) -> str:
        gold = np.array(next(iter(pool.gold.values())))
        pred = np.array(next(iter(pool.pred[method].values())))
        inscope = gold != "oos"
        return (f"   in-scope acc {np.mean(pred[inscope] == gold[inscope]):.3f}, "
                f"oos recall {np.mean(pred[~inscope] == 'oos'):.3f}")
    return extra


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["mdsirc", "banking77", "clinc150"],
                        choices=["mdsirc", "banking77", "clinc150"])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--shots", type=int, nargs="+", default=[5, 10])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--bootstrap", type=int, default=1000, help="Bootstrap resamples per CI.")
    parser.add_argument("--lora-decider", help="A saved LoRA decider (kdsl train --kind lora) for the sealed test.")
    parser.add_argument("--threads", type=int, default=1, help="Threads of the embedding model.")
    parser.add_argument("--gemma", action="store_true",
                        help="Also the features decider with EmbeddingGemma blocks (its pack must be pulled).")
    parser.add_argument("--out", type=Path, help="Write every figure as JSON here.")
    args = parser.parse_args()

    settings = Settings()
    encoders = default_encoders(settings, images=True, threads=args.threads, gemma=False)
    gemma = default_encoders(settings, images=True, threads=args.threads, gemma=True) if args.gemma else None
    print(f"# quality benchmark: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}, "
          f"embedding threads {args.threads}; KDSL_HOME {settings.home}")
    start = time.perf_counter()
    results: list[dict] = []
    if "mdsirc" in args.datasets:
        results += mdsirc(settings, encoders, args.folds, args.bootstrap, args.lora_decider, gemma)
    for name in ("banking77", "clinc150"):
        if name in args.datasets:
            results += few_shot(name, settings, encoders, args.shots, args.seeds, args.bootstrap, gemma)
    print(f"\ndone in {time.perf_counter() - start:.0f} s; load average now {os.getloadavg()[0]:.2f}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1), encoding="utf-8")
        print(f"figures: {args.out}")


if __name__ == "__main__":
    main()
