"""OCR engines side by side on the MDSIRC image-scene task: cold seconds per image, and what a classifier reads.

    .venv/bin/python benchmarks/features.py                       # rapidocr, ppocrv6-small, ppocrv6-tiny; 493 images
    .venv/bin/python benchmarks/features.py --engines rapidocr ppocrv6-tiny --limit 200
    .venv/bin/python benchmarks/features.py --decider             # also (c): the features decider per engine

For each engine the image-scene samples' features are built by kdsl's FeatureBuilder (the code path of
`kdsl features build`: OCR lines, then the title and bottom bands from their boxes) with an OcrTool of that engine,
behind a feature cache of its own under `<home-prefix>-<engine>` (so the first run is cold; `--fresh` empties it).
The seconds of the cold run are stored there (ocr-timing.json) and shown again by later, cached runs, with the
threads and the load average they ran under; the engine's load time is measured apart.

Then, on the same samples and the same stratified folds (fixed seed) for every engine, pooled out-of-fold
predictions of
  (a) char TF-IDF (1-3 char n-grams) + logistic regression on the OCR text,
  (b) the same on the OCR text and, as a second block of its own, the title band,
  (c) with --decider: kdsl's `features` decider (FeatureDecider), which also reads visual labels and e5 and
      EfficientNet embeddings (cached under KDSL_HOME, shared by all engines),
are scored by weighted F1, macro F1 (over the gold classes) and accuracy, each with a 95% bootstrap CI, and each
engine against rapidocr by a paired bootstrap (the same resampled samples for both).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from kdsl.config import Settings
from kdsl.data import Sample, load_dataset
from kdsl.tools.builder import FeatureBuilder
from kdsl.tools.cache import FeatureCache
from kdsl.tools.features import FeatureTable
from kdsl.tools.ocr import ENGINES, OcrTool
from kdsl.tools.pipeline import CACHE_FILE

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "www2025-mdsirc"
TASK = "image_scene"
BASE = "rapidocr"
TIMING = "ocr-timing.json"
METRICS = ("wF1", "macroF1", "acc")


# --- data and features ----------------------------------------------------------------------------------------


def image_samples(data: Path, limit: int, seed: int) -> tuple[list[Sample], dict]:
    """The image-scene samples, or a stratified subset of `limit` of them (the same for every engine)."""
    dataset = load_dataset(data)
    samples = [s for s in dataset.samples if s.task == TASK]
    if limit and limit < len(samples):
        from sklearn.model_selection import train_test_split

        keep, _ = train_test_split(samples, train_size=limit, stratify=[s.label for s in samples],
                                   random_state=seed)
        order = {s.id: i for i, s in enumerate(samples)}
        samples = sorted(keep, key=lambda s: order[s.id])
    return samples, dataset.label_spaces


def engine_features(engine: str, samples: list[Sample], prefix: str, threads: int, fresh: bool,
                    progress: bool) -> tuple[FeatureTable, dict]:
    """The engine's features of `samples` and the timing of its cold run (measured now or read back)."""
    home = Path(f"{prefix}-{engine}")
    if fresh and home.exists():
        shutil.rmtree(home)
    settings = Settings(home=home, ocr_engine=engine)
    settings.cache_dir.mkdir(parents=True, exist_ok=True)
    ocr = OcrTool(FeatureCache(settings.cache_dir / CACHE_FILE), engine=settings.ocr_engine, threads=threads)
    builder = FeatureBuilder(ocr=ocr, labeler=None, progress=progress)

    load_before = os.getloadavg()
    t0 = time.perf_counter()
    ocr._load()  # the engine's load time, apart from the per-image time
    load_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    table = builder.build(samples)
    build_s = time.perf_counter() - t1
    load_after = os.getloadavg()

    timing_file = home / TIMING
    report = builder.report_
    now = {"engine": engine, "engine_version": ocr.engine_version, "threads": threads, "cpus": os.cpu_count(),
           "images_run": ocr.calls, "images": report.images, "failed": report.failed, "load_s": round(load_s, 2),
           "build_s": round(build_s, 1), "s_per_image": round(build_s / ocr.calls, 3) if ocr.calls else None,
           "loadavg_before": [round(x, 2) for x in load_before], "loadavg_after": [round(x, 2) for x in load_after]}
    if ocr.calls:
        timings = json.loads(timing_file.read_text()) if timing_file.exists() else []
        timing_file.write_text(json.dumps([*timings, now], indent=1))
        cold = now
    elif timing_file.exists():
        cold = {**json.loads(timing_file.read_text())[-1], "read_back": True}
    else:
        cold = {**now, "note": "every image was cached and no cold timing is on record"}
    return table, cold


# --- classifiers ----------------------------------------------------------------------------------------------


def tfidf_lr(fields: Sequence[str]) -> Callable[[list, list, list], list[str]]:
    """Char 1-3-gram TF-IDF of each field (a block per field, stacked) + logistic regression."""

    def run(train_rows: list, train_y: list[str], test_rows: list) -> list[str]:
        from scipy.sparse import hstack
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        blocks_tr, blocks_te = [], []
        for f in fields:
            vec = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True, min_df=1)
            blocks_tr.append(vec.fit_transform([getattr(r, f) or " " for r in train_rows]))
            blocks_te.append(vec.transform([getattr(r, f) or " " for r in test_rows]))
        model = LogisticRegression(C=10, max_iter=2000)
        model.fit(hstack(blocks_tr).tocsr(), train_y)
        return list(model.predict(hstack(blocks_te).tocsr()))

    return run


def out_of_fold(samples: list[Sample], folds: list[tuple[np.ndarray, np.ndarray]],
                predict: Callable[[list[Sample], list[Sample]], list[str]]) -> list[str]:
    pred: list[str] = [""] * len(samples)
    for tr, te in folds:
        for i, p in zip(te, predict([samples[j] for j in tr], [samples[j] for j in te]), strict=True):
            pred[i] = p
    return pred


# --- metrics --------------------------------------------------------------------------------------------------


def _metrics(gold: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    """(weighted F1, macro F1 over the gold classes present, accuracy) from integer labels."""
    cm = np.bincount(gold * k + pred, minlength=k * k).reshape(k, k)
    tp = np.diag(cm).astype(float)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    f1 = np.divide(2 * tp, support + predicted, out=np.zeros(k), where=(support + predicted) > 0)
    present = support > 0
    return np.array([(f1 * support).sum() / support.sum(), f1[present].mean(), tp.sum() / len(gold)])


def score(gold: list[str], preds: dict[str, list[str]], n_boot: int, seed: int) -> dict:
    """Point and 95% bootstrap CI per engine; paired CI of each engine minus rapidocr on the same resamples."""
    labels = sorted(set(gold) | {p for ps in preds.values() for p in ps})
    index = {lab: i for i, lab in enumerate(labels)}
    g = np.array([index[x] for x in gold])
    p = {e: np.array([index[x] for x in ps]) for e, ps in preds.items()}
    k = len(labels)
    rng = np.random.default_rng(seed)
    draws = {e: [] for e in p}
    for _ in range(n_boot):
        idx = rng.integers(0, len(g), len(g))
        for e in p:
            draws[e].append(_metrics(g[idx], p[e][idx], k))
    out = {}
    for e in p:
        d = np.array(draws[e])
        row = {"point": _metrics(g, p[e], k).tolist(), "ci": np.percentile(d, [2.5, 97.5], axis=0).T.tolist()}
        if BASE in p and e != BASE:
            diff = d - np.array(draws[BASE])
            row["delta"] = (_metrics(g, p[e], k) - _metrics(g, p[BASE], k)).tolist()
            row["delta_ci"] = np.percentile(diff, [2.5, 97.5], axis=0).T.tolist()
        out[e] = row
    return out


def show(title: str, scored: dict) -> None:
    print(f"\n## {title}")
    print(f"  {'engine':14s} " + " ".join(f"{m + ' [95% CI]':24s}" for m in METRICS) + f"  delta vs {BASE} [paired CI]")
    for e, row in scored.items():
        cells = " ".join(f"{row['point'][i]:.3f} [{row['ci'][i][0]:.3f}, {row['ci'][i][1]:.3f}]  "
                         for i in range(3))
        delta = ""
        if "delta" in row:
            delta = "; ".join(f"{m} {row['delta'][i]:+.3f} [{row['delta_ci'][i][0]:+.3f}, {row['delta_ci'][i][1]:+.3f}]"
                              for i, m in enumerate(METRICS))
        print(f"  {e:14s} {cells}{delta}")


# --- main -----------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA, help="The MDSIRC folder.")
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=list(ENGINES))
    parser.add_argument("--home-prefix", default="/tmp/ocr-bench",
                        help="Each engine's scratch KDSL_HOME is <prefix>-<engine> (its own cold cache).")
    parser.add_argument("--fresh", action="store_true", help="Empty each engine's scratch home first (cold run).")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime and OpenCV threads of the OCR.")
    parser.add_argument("--limit", type=int, default=0, help="A stratified subset of this many image samples (0: all).")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0, help="Seed of the subset, the folds and the bootstrap.")
    parser.add_argument("--bootstrap", type=int, default=1000, help="Bootstrap resamples per CI.")
    parser.add_argument("--decider", action="store_true",
                        help="(c) also fit the features decider per fold (visual labels and embeddings are cached "
                             "under KDSL_HOME, shared by the engines; minutes per engine).")
    parser.add_argument("--progress", action="store_true", help="Show a progress bar over images.")
    parser.add_argument("--out", type=Path, help="Write every figure as JSON here.")
    args = parser.parse_args()

    import cv2
    from sklearn.model_selection import StratifiedKFold

    cv2.setNumThreads(args.threads)
    samples, label_spaces = image_samples(args.data, args.limit, args.seed)
    gold = [s.label for s in samples]
    folds = list(StratifiedKFold(args.folds, shuffle=True, random_state=args.seed).split(samples, gold))
    print(f"# OCR engines on MDSIRC {TASK}: {len(samples)} samples, {args.folds}-fold stratified CV (seed "
          f"{args.seed}); {os.cpu_count()} cores, OCR threads {args.threads}, load average {os.getloadavg()[0]:.2f}")

    tables: dict[str, FeatureTable] = {}
    timings: dict[str, dict] = {}
    for engine in args.engines:
        print(f"{engine}: building features under {args.home_prefix}-{engine} ...", flush=True)
        tables[engine], timings[engine] = engine_features(engine, samples, args.home_prefix, args.threads,
                                                          args.fresh, args.progress)
        t = timings[engine]
        print(f"  {engine}: {t['s_per_image']} s/image cold over {t['images_run']} images "
              f"(load {t['load_s']} s; threads {t['threads']}; load average {t['loadavg_before'][0]} -> "
              f"{t['loadavg_after'][0]}){' [read back from the cold run]' if t.get('read_back') else ''}",
              flush=True)

    results: dict = {"samples": len(samples), "folds": args.folds, "seed": args.seed, "timings": timings}
    methods = {"a: text": ("image_text",), "b: text + title": ("image_text", "image_title")}
    for name, fields in methods.items():
        run = tfidf_lr(fields)
        preds = {
            e: out_of_fold(samples, folds, lambda tr, te, e=e, run=run: run(
                [tables[e][s.id] for s in tr], [s.label for s in tr], [tables[e][s.id] for s in te]))
            for e in args.engines
        }
        results[name] = score(gold, preds, args.bootstrap, args.seed)
        show(f"({name}) char 1-3-gram TF-IDF + LR", results[name])

    if args.decider:
        results["c: features decider"] = decider_scores(args, samples, folds, gold, label_spaces, tables)
        show("(c) features decider", results["c: features decider"])

    print(f"\nload average now {os.getloadavg()[0]:.2f}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1, ensure_ascii=False), encoding="utf-8")
        print(f"figures: {args.out}")


def decider_scores(args, samples: list[Sample], folds, gold: list[str], label_spaces: dict,
                   tables: dict[str, FeatureTable]) -> dict:
    """(c): the features decider per engine; visual labels and embeddings from KDSL_HOME's shared cache."""
    from kdsl.agents.decider_kinds import default_encoders
    from kdsl.agents.feature_decider import FeatureDecider, FeatureDeciderConfig
    from kdsl.tools.features import SampleFeatures

    shared = Settings()
    encoders = default_encoders(shared, images=True, threads=args.threads)
    labels = FeatureBuilder(ocr=None, labeler=encoders.labeler, progress=args.progress).build(samples)
    spaces = {TASK: label_spaces[TASK]}
    preds = {}
    for engine, table in tables.items():
        # The engine's OCR fields with the shared visual labels.
        merged = FeatureTable(SampleFeatures(**{**table[s.id].model_dump(), "image_labels": labels[s.id].image_labels})
                              for s in samples)

        def run(train: list[Sample], test: list[Sample], merged=merged) -> list[str]:
            decider = FeatureDecider(FeatureDeciderConfig(seed=args.seed), encoders)
            decider.fit(train, merged, spaces)
            return [d.best for d in decider.predict(test, merged)]

        t0 = time.perf_counter()
        preds[engine] = out_of_fold(samples, folds, run)
        print(f"  (c) {engine}: {time.perf_counter() - t0:.0f} s", flush=True)
    return score(gold, preds, args.bootstrap, args.seed)


if __name__ == "__main__":
    main()
