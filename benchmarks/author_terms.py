"""Does a small LLM know words the few labeled samples lack? Mined label terms against mined + LLM terms, on sealed
test samples.

What a small model could add to rule discovery is knowledge: the synonyms and paraphrases of an intent, the words of
a page type, that the few training samples do not show. This measures that claim directly, before any search:
- mined: each label's most specific terms on the training samples (`label_terms`, as `kdsl discover` mines them:
  10 per label, support >= 2, precision lower bound >= 0.3);
- llm: for each label, the model reads the label's name and 3 of its training samples (`--examples`; 0 asks
  from the name alone, as `kdsl discover --term-author` does) and lists up to 10 terms (kdsl's `ask_terms`:
  JSON constrained by a schema; about 40 tokens a reply). Its terms are checked on the training samples with the
  same bars as the mined ones ("validated"); terms that occur in no training sample are "unseen": no evidence, so a
  session could not accept them, and they are scored apart.
Each term is a one-term rule (label, field, term) of kdsl's rule language (whole words in spaced scripts). On the
test samples a sample is covered when a rule fires; the rule with the highest training lower bound decides it.
Reported per dataset and task, pooled over seeds: coverage and precision where fired with 95% bootstrap CIs, the
paired CI of (mined + llm) minus mined, the share of terms found in no training sample, and seconds and tokens per
call. Datasets: MDSIRC (seeded 80/20 splits of each task) and Banking77 / CLINC150 (k per intent from the training
data; the official test set; CLINC150's out-of-scope queries are test samples no in-scope rule should fire on).

    KDSL_HOME=~/.cache/kdsl .venv/bin/python benchmarks/author_terms.py --seeds 0
    .venv/bin/python benchmarks/author_terms.py --datasets banking77 --seeds 0 1 2 --pack qwen2.5-coder-1.5b-instruct
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

import numpy as np

from kdsl.agents.authors.knowledge import ask_terms
from kdsl.agents.authors.mined import label_terms
from kdsl.config import Settings
from kdsl.data import Sample, SplitConfig, k_shot, load_dataset, split_dataset
from kdsl.models import load_backend
from kdsl.rules import RuleEngine
from kdsl.rules.analysis import wilson_lower_bound
from kdsl.tools.features import FeatureTable
from kdsl.tools.pipeline import default_builder

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FIELD = {"dialogue_intent": "user_text", "image_scene": "image_text", "intent": "user_text"}
def splits(name: str, seed: int, shots: int) -> tuple[list[Sample], list[Sample], str]:
    """(train, test, language) of one seed."""
    if name == "mdsirc":
        full = load_dataset(DATA / "www2025-mdsirc")
        split = split_dataset(full, SplitConfig(search=0.8, verify=0.0, test=0.2, seed=seed))
        return [full.get(i) for i in split.search], [full.get(i) for i in split.test], "zh"
    full = load_dataset(DATA / ("banking77" if name == "banking77" else "clinc150"))
    pool = [s.id for s in full.samples if s.meta.get("split") == "train" and s.meta.get("oos") != "true"]
    test = [full.get(s.id) for s in full.samples if s.meta.get("split") == "test"]
    return [full.get(i) for i in k_shot(full, shots, ids=pool, seed=seed)], test, "en"


class TermAsker:
    """The model as a term source (kdsl's `ask_terms`, one call per label), its costs kept per call."""

    def __init__(self, backend, language: str):
        self.backend, self.language = backend, language
        self.calls: list[tuple[float, int, int]] = []

    def terms(self, label: str, examples: list[str]) -> list[str]:
        found = ask_terms(self.backend, [label], language=self.language, examples={label: examples})
        self.calls.append((found.seconds, found.prompt_tokens, found.completion_tokens))
        return list(found.terms.get(label, ()))


def one_split(name: str, task: str, train: list[Sample], test: list[Sample], table: FeatureTable | None,
              asker: TermAsker, seed: int, shown: int) -> dict:
    field = FIELD[task]

    def engine(samples: list[Sample]) -> RuleEngine:
        from kdsl.tools.features import SampleFeatures, dialogue_fields

        rows = [table[s.id] if table is not None else SampleFeatures(sample_id=s.id, **dialogue_fields(s))
                for s in samples]
        return RuleEngine(rows, [s.task for s in samples])

    e_tr, e_te = engine(train), engine(test)
    g_tr = np.array([s.label for s in train], dtype=object)
    mined = [(r.label, r.when.any_of[0]) for r in label_terms({field: e_tr.texts(field)}, list(g_tr), task,
                                                              per_label=10, min_support=2, min_lower=0.3)]
    rng = random.Random(seed)
    texts = e_tr.texts(field)
    validated, unseen, asked = [], [], 0
    for label in sorted(set(g_tr)):
        rows = [i for i, g in enumerate(g_tr) if g == label and texts[i].strip()]
        if not rows:
            continue
        for term in asker.terms(label, [texts[i] for i in rng.sample(rows, min(shown, len(rows)))]):
            asked += 1
            mask = e_tr.term_mask(field, term)
            hits, right = int(mask.sum()), int((g_tr[mask] == label).sum())
            if hits == 0:
                unseen.append((label, term))
            elif hits >= 2 and wilson_lower_bound(right, hits) >= 0.3:
                validated.append((label, term))

    def predict(rules: list[tuple[str, str]]) -> list[str | None]:
        """Per test sample: the label of the firing rule with the best training lower bound, else None."""
        best: list[tuple[float, str | None]] = [(-1.0, None)] * len(test)
        for label, term in dict.fromkeys(rules):
            m_tr = e_tr.term_mask(field, term)
            lower = wilson_lower_bound(int((g_tr[m_tr] == label).sum()), int(m_tr.sum()))
            for i in np.flatnonzero(e_te.term_mask(field, term)):
                if lower > best[i][0]:
                    best[i] = (lower, label)
        return [lab for _, lab in best]

    return {"dataset": name, "task": task, "seed": seed, "gold": [s.label for s in test],
            "mined": predict(mined), "llm": predict(validated), "both": predict(mined + validated),
            "unseen": predict(unseen), "terms": {"mined": len(set(mined)), "llm_asked": asked,
                                                 "llm_validated": len(set(validated)),
                                                 "llm_unseen": len(set(unseen)),
                                                 "llm_new": len(set(validated) - set(mined))}}


def cov_prec(gold: np.ndarray, pred: np.ndarray) -> np.ndarray:
    fired = pred != None  # noqa: E711 - an object array
    return np.array([fired.mean(), (pred[fired] == gold[fired]).mean() if fired.any() else np.nan])


def report(rows: list[dict], n_boot: int, seed: int) -> dict:
    gold = np.array([g for r in rows for g in r["gold"]], dtype=object)
    preds = {m: np.array([p for r in rows for p in r[m]], dtype=object) for m in ("mined", "llm", "both", "unseen")}
    rng = np.random.default_rng(seed)
    draws = {m: [] for m in preds}
    for _ in range(n_boot):
        idx = rng.integers(0, len(gold), len(gold))
        for m, p in preds.items():
            draws[m].append(cov_prec(gold[idx], p[idx]))
    out = {"n": len(gold), "terms": {k: int(sum(r["terms"][k] for r in rows)) for k in rows[0]["terms"]}}
    for m, p in preds.items():
        d = np.array(draws[m])
        out[m] = {"point": cov_prec(gold, p).tolist(), "ci": np.nanpercentile(d, [2.5, 97.5], axis=0).T.tolist()}
    diff = np.array(draws["both"]) - np.array(draws["mined"])
    out["both - mined"] = {"point": (cov_prec(gold, preds["both"]) - cov_prec(gold, preds["mined"])).tolist(),
                           "ci": np.nanpercentile(diff, [2.5, 97.5], axis=0).T.tolist()}
    return out


def show(title: str, r: dict, calls: list[tuple[float, int, int]]) -> None:
    t = r["terms"]
    print(f"\n## {title} (test n {r['n']}; terms: mined {t['mined']}, llm asked {t['llm_asked']}, validated "
          f"{t['llm_validated']} of which {t['llm_new']} not mined, unseen in training {t['llm_unseen']})")
    print(f"  {'rules':14s} {'coverage [95% CI]':26s} precision where fired [95% CI]")
    for m in ("mined", "llm", "both", "unseen", "both - mined"):
        (c, p), ((cl, ch), (pl, ph)) = r[m]["point"], r[m]["ci"]
        sign = "+" if m == "both - mined" else ""
        print(f"  {m:14s} {c:{sign}.3f} [{cl:{sign}.3f}, {ch:{sign}.3f}]     "
              f"{p:{sign}.3f} [{pl:{sign}.3f}, {ph:{sign}.3f}]")
    if calls:
        s = [c[0] for c in calls]
        print(f"  llm calls {len(calls)}: median {np.median(s):.1f} s, mean {np.mean(s):.1f} s; tokens per call "
              f"{np.mean([c[1] for c in calls]):.0f} prompt + {np.mean([c[2] for c in calls]):.0f} reply")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["mdsirc", "banking77", "clinc150"],
                   choices=["mdsirc", "banking77", "clinc150"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--shots", type=int, default=10, help="Training examples per intent on Banking77 / CLINC150.")
    p.add_argument("--examples", type=int, default=3,
                   help="Training samples of the label shown to the model (0: its name alone, as sessions ask).")
    p.add_argument("--pack", default="qwen2.5-coder-1.5b-instruct", help="The llama.cpp model pack asked.")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--out", type=Path, help="Write the figures here (JSON).")
    args = p.parse_args()
    settings = Settings()
    print(f"# author terms: {os.cpu_count()} cores, llama.cpp threads {args.threads}, load average "
          f"{os.getloadavg()[0]:.2f}; model {args.pack}; {args.examples} samples shown per label", flush=True)
    backend = load_backend(f"llama_cpp:{args.pack}", settings, n_ctx=2048, threads=args.threads)
    results = {}
    start = time.perf_counter()
    for name in args.datasets:
        by_task: dict[str, list[dict]] = {}
        calls: dict[str, list] = {}
        for seed in args.seeds:
            train, test, language = splits(name, seed, args.shots)
            table = None
            if name == "mdsirc":
                table = default_builder(settings, images=True, progress=False).build([*train, *test])
            for task in sorted({s.task for s in train}):
                asker = TermAsker(backend, language)
                row = one_split(name, task, [s for s in train if s.task == task], [s for s in test if s.task == task],
                                table, asker, seed, args.examples)
                by_task.setdefault(task, []).append(row)
                calls.setdefault(task, []).extend(asker.calls)
                print(f"{name} {task} seed {seed}: {len(asker.calls)} calls, {time.perf_counter() - start:.0f} s "
                      "so far", flush=True)
        for task, rows in by_task.items():
            results[f"{name}/{task}"] = report(rows, args.bootstrap, 0)
            results[f"{name}/{task}"]["seconds_per_call"] = [c[0] for c in calls[task]]
            show(f"{name} {task}, seeds {args.seeds} pooled", results[f"{name}/{task}"], calls[task])
    backend.close()
    print(f"\ndone in {time.perf_counter() - start:.0f} s; load average {os.getloadavg()[0]:.2f}")
    if args.out:
        args.out.write_text(json.dumps(results, ensure_ascii=False, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
