"""OCR engines side by side on the MDSIRC image-scene task: cold seconds per image, and what a classifier reads.

    .venv/bin/python benchmarks/features.py                       # rapidocr, ppocrv6-small, ppocrv6-tiny; 493 images
    .venv/bin/python benchmarks/features.py --engines rapidocr ppocrv6-tiny --limit 200
    .venv/bin/python benchmarks/features.py --decider             # also (c): the features decider per engine
    .venv/bin/python benchmarks/features.py --engines ppocrv6-tiny --ablation   # (d): the decider's blocks
    .venv/bin/python benchmarks/features.py --engines ppocrv6-tiny --text-ablation   # (e): its text blocks

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
  (d) with --ablation, on the first engine: the features decider with the OCR text alone (ocr_char), with every
      default block, and with every block but one, each against every block,
  (e) with --text-ablation, the same for the text blocks on MDSIRC's dialogue task (5-fold CV) and on Banking77 at
      10 examples per intent (fitted on the seed's draw from its training file, scored on its test file), with
      cold seconds per text of the e5 encoder,
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

from kdsl.agents.feature_decider import FeatureDecider, FeatureDeciderConfig
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


def score(gold: list[str], preds: dict[str, list[str]], n_boot: int, seed: int, base: str = BASE) -> dict:
    """Point and 95% bootstrap CI per method; paired CI of each method minus `base` on the same resamples."""
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
        if base in p and e != base:
            diff = d - np.array(draws[base])
            row["delta"] = (_metrics(g, p[e], k) - _metrics(g, p[base], k)).tolist()
            row["delta_ci"] = np.percentile(diff, [2.5, 97.5], axis=0).T.tolist()
        out[e] = row
    return out


def show(title: str, scored: dict, base: str = BASE) -> None:
    print(f"\n## {title}")
    print(f"  {'method':14s} " + " ".join(f"{m + ' [95% CI]':24s}" for m in METRICS) + f"  delta vs {base} [paired CI]")
    for e, row in scored.items():
        cells = " ".join(f"{row['point'][i]:.3f} [{row['ci'][i][0]:.3f}, {row['ci'][i][1]:.3f}]  "
                         for i in range(3))
        delta = ""
        if "delta" in row:
            delta = "; ".join(f"{m} {row['delta'][i]:+.3f} [{row['delta_ci'][i][0]:+.3f}, {row['delta_ci'][i][1]:+.3f}]"
                              for i, m in enumerate(METRICS))
        print(f"  {e:14s} {cells}{delta}", flush=True)


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
    parser.add_argument("--ablation", action="store_true",
                        help="(d) the features decider's blocks on the first engine: OCR text only, every block, "
                             "and every block but one, each against every block (minutes per variant).")
    parser.add_argument("--text-ablation", action="store_true",
                        help="(e) the decider's text blocks on MDSIRC dialogue (CV) and Banking77 10-shot.")
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

    if args.ablation:
        engine = args.engines[0]
        results["d: blocks"] = ablation_scores(args, samples, folds, gold, label_spaces, tables[engine])
        show(f"(d) features decider blocks ({engine}), each against all blocks", results["d: blocks"], ALL)

    if args.text_ablation:
        results["e: text blocks"] = text_ablation(args)

    print(f"\nload average now {os.getloadavg()[0]:.2f}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1, ensure_ascii=False), encoding="utf-8")
        print(f"figures: {args.out}")


def _with_visual_labels(args, samples: list[Sample], table: FeatureTable):
    """The encoders (KDSL_HOME's shared cache), and `table`'s OCR fields with the shared visual labels."""
    from kdsl.agents.decider_kinds import default_encoders
    from kdsl.tools.features import SampleFeatures

    encoders = default_encoders(Settings(), images=True, threads=args.threads)
    labels = FeatureBuilder(ocr=None, labeler=encoders.labeler, progress=args.progress).build(samples)
    merged = FeatureTable(SampleFeatures(**{**table[s.id].model_dump(), "image_labels": labels[s.id].image_labels})
                          for s in samples)
    return encoders, merged


def _decider_oof(args, samples: list[Sample], folds, label_spaces: dict, encoders, table: FeatureTable,
                 name: str, task: str = TASK, **config) -> list[str]:
    spaces = {task: label_spaces[task]}

    def run(train: list[Sample], test: list[Sample]) -> list[str]:
        decider = FeatureDecider(FeatureDeciderConfig(seed=args.seed, **config), encoders)
        decider.fit(train, table, spaces)
        return [d.best for d in decider.predict(test, table)]

    t0 = time.perf_counter()
    pred = out_of_fold(samples, folds, run)
    print(f"  {name}: {time.perf_counter() - t0:.0f} s", flush=True)
    return pred


def decider_scores(args, samples: list[Sample], folds, gold: list[str], label_spaces: dict,
                   tables: dict[str, FeatureTable]) -> dict:
    """(c): the features decider per engine; visual labels and embeddings from KDSL_HOME's shared cache."""
    preds = {}
    for engine, table in tables.items():
        encoders, merged = _with_visual_labels(args, samples, table)
        preds[engine] = _decider_oof(args, samples, folds, label_spaces, encoders, merged, f"(c) {engine}")
    return score(gold, preds, args.bootstrap, args.seed)


ALL = "all blocks"


def ablation_scores(args, samples: list[Sample], folds, gold: list[str], label_spaces: dict,
                    table: FeatureTable) -> dict:
    """(d): the decider with OCR text alone, with every default block, and without each block an image sample
    has something for (the dialogue blocks read nothing here and are left out by the decider itself)."""
    from kdsl.agents.decider_blocks import DEFAULT_BLOCKS

    encoders, merged = _with_visual_labels(args, samples, table)
    every = tuple(b.name for b in DEFAULT_BLOCKS)
    variants = {ALL: every, "ocr_char only": ("ocr_char",)}
    for name in ("ocr_char", "title_char", "bottom_char", "ocr_embed", "image"):
        variants[f"- {name}"] = tuple(b for b in every if b != name)
    preds = {name: _decider_oof(args, samples, folds, label_spaces, encoders, merged, f"(d) {name}", blocks=blocks)
             for name, blocks in variants.items()}
    return score(gold, preds, args.bootstrap, args.seed, base=ALL)


TEXT_BLOCKS = ("user_char", "agent_char", "user_word", "user_embed", "last_embed")
ALL_TEXT = "all text blocks"


def _text_variants(present: Sequence[str]) -> dict[str, tuple[str, ...]]:
    variants = {ALL_TEXT: tuple(present), "user_char only": ("user_char",)}
    for name in present:
        variants[f"- {name}"] = tuple(b for b in present if b != name)
    return variants


def _e5_cold_seconds(texts: list[str], threads: int) -> float:
    """Seconds per text of the e5 encoder with no cache (the model's load excluded)."""
    from kdsl.tools.embeddings import TextEmbedder

    embedder = TextEmbedder(None, threads=threads)
    embedder.embed(["warm up"])
    t0 = time.perf_counter()
    embedder.embed(texts)
    return (time.perf_counter() - t0) / max(len(texts), 1)


def text_ablation(args) -> dict:
    """(e): the decider's text blocks on MDSIRC dialogue (k-fold CV) and Banking77 at 10 per intent (its test
    file). The image blocks are left out: this measures the text encoders."""
    from sklearn.model_selection import StratifiedKFold

    from kdsl.agents.decider_kinds import default_encoders
    from kdsl.data import k_shot

    encoders = default_encoders(Settings(), images=False, threads=args.threads)
    builder = FeatureBuilder(ocr=None, labeler=None, progress=False)
    out: dict = {}

    mdsirc = load_dataset(args.data)
    dialogue = [s for s in mdsirc.samples if s.task == "dialogue_intent"]
    gold = [s.label for s in dialogue]
    table = builder.build(dialogue)
    seconds = _e5_cold_seconds([table[s.id].user_text or "" for s in dialogue[:200]], args.threads)
    print(f"\n# (e) text blocks; e5 cold {seconds * 1000:.1f} ms per MDSIRC user text (200 texts, threads "
          f"{args.threads})", flush=True)
    folds = list(StratifiedKFold(args.folds, shuffle=True, random_state=args.seed).split(dialogue, gold))
    spaces = {"dialogue_intent": mdsirc.label_spaces["dialogue_intent"]}
    preds = {}
    for name, blocks in _text_variants(TEXT_BLOCKS).items():
        preds[name] = _decider_oof(args, dialogue, folds, spaces, encoders, table, f"(e) dialogue {name}",
                                   blocks=blocks, task="dialogue_intent")
    out["mdsirc dialogue"] = {"e5_s_per_text": seconds,
                              "scores": score(gold, preds, args.bootstrap, args.seed, base=ALL_TEXT)}
    show(f"(e) MDSIRC dialogue_intent ({len(dialogue)} samples, {args.folds}-fold CV), each against all text blocks",
         out["mdsirc dialogue"]["scores"], ALL_TEXT)

    bank = load_dataset(args.data.parent / "banking77")
    pool = [s.id for s in bank.samples if s.meta.get("split") == "train"]
    train = [bank.get(i) for i in k_shot(bank, 10, ids=pool, seed=args.seed)]
    test = [s for s in bank.samples if s.meta.get("split") == "test"]
    table = builder.build([*train, *test])
    seconds = _e5_cold_seconds([table[s.id].user_text or "" for s in test[:200]], args.threads)
    task = train[0].task
    preds = {}
    for name, blocks in _text_variants(("user_char", "user_word", "user_embed")).items():
        t0 = time.perf_counter()
        decider = FeatureDecider(FeatureDeciderConfig(seed=args.seed, blocks=blocks), encoders)
        decider.fit(train, table, {task: bank.label_spaces[task]})
        fit_s = time.perf_counter() - t0
        preds[name] = [d.best for d in decider.predict(test, table)]
        print(f"  (e) banking77 {name}: fit {fit_s:.0f} s, {time.perf_counter() - t0:.0f} s with the test", flush=True)
    gold = [s.label for s in test]
    out["banking77 10-shot"] = {"e5_s_per_text": seconds,
                                "scores": score(gold, preds, args.bootstrap, args.seed, base=ALL_TEXT)}
    show(f"(e) Banking77, 10 per intent (seed {args.seed}; {len(train)} train, {len(test)} test; e5 cold "
         f"{seconds * 1000:.1f} ms per text), each against all text blocks", out["banking77 10-shot"]["scores"],
         ALL_TEXT)
    return out


if __name__ == "__main__":
    main()
