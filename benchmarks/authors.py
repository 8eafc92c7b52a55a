"""Rule authors at equal wall-clock budgets: the miner alone, a language model alone, and both, in discovery sessions
run as a user runs them, scored on sealed test samples none of them saw.

Arms (each a `kdsl discover` configuration; every arm gets the same `--budget` seconds per task session, and the
term author's calls are paid out of it, by their recorded seconds also when its terms come from the cache):
- mined:  `--author contrast` (the default: a search over label-specific substrings, plus each label's mined terms
          and the terms of its name);
- model:  `--author none --no-mined --term-author M`: the model's terms for each label, asked from its name alone,
          checked on data by the same verifier; no search, no mining;
- both:   `--author contrast --term-author M`;
- model-rules (opt in, slow: the rule-writing model takes about 45 s a call here): `--author M --no-mined
          --term-author M`, where the model also writes rules inside the search.

Per dataset, task and arm, pooled over seeds: the decider, the accepted rules and the two together with 95% bootstrap
CIs, beside majority / char TF-IDF + LR / e5 + LR (benchmarks/collaboration.py's table), the rules' precision
estimated by cross-fitting beside the precision realized, accepted rules by author, accepted terms that are fragments
of a longer word, and the authors' calls: median seconds per call and tokens per call (llama.cpp's counts, the
model's own tokenizer). Then each arm against `mined` on the same test samples (the same seeds draw the same splits):
paired 95% CIs of the differences in the rules' coverage and in their precision where they fire.

    .venv/bin/python benchmarks/authors.py                                     # MDSIRC x3, Banking77, CLINC150
    .venv/bin/python benchmarks/authors.py --datasets banking77 --seeds 0 --budget 300
    .venv/bin/python benchmarks/authors.py --arms mined model both model-rules --datasets mdsirc --seeds 0

The model's terms depend on the label names only, so each dataset asks it once (cached under KDSL_HOME); CLINC150's
150 intents take about 10 minutes the first time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from author_terms import cov_prec  # noqa: E402
from collaboration import Run, few_shot, mdsirc, scratch_settings  # noqa: E402

from kdsl.agents.decider_kinds import default_encoders  # noqa: E402
from kdsl.config import Settings  # noqa: E402

MODEL = "llama_cpp:qwen2.5-coder-1.5b-instruct"
BASE = "mined"


def arms(model: str) -> dict[str, dict]:
    """Arm name -> the SessionConfig fields that make it."""
    return {
        "mined": {"author": "contrast"},
        "model": {"author": "none", "mined": False, "term_author": model},
        "both": {"author": "contrast", "term_author": model},
        "model-rules": {"author": model, "mined": False, "term_author": model},
    }


def calls(run: Run) -> dict:
    """The authors' calls of an arm's sessions: seconds of each call and tokens per call, by kind of author. The
    term author's replies are cached across sessions on the same labels: its calls count where they were made."""
    out: dict[str, dict] = {}
    for _, _, folder in run.children:
        for line in (folder / "events.jsonl").read_text(encoding="utf-8").splitlines():
            event = json.loads(line)
            if event["agent"] == "author":  # a model-free author counts characters / 4 as its tokens
                who = f"rule author {event.get('model') or '?'}"
                c = out.setdefault(who, {"seconds": [], "prompt": 0, "reply": 0, "calls": 0})
                c["seconds"].append(event["seconds"])
                c["calls"] += 1
            elif event["agent"] == "term-author":
                if json.loads(event["output"]).get("cached"):  # asked by an earlier session: paid there
                    continue
                c = out.setdefault("term author", {"seconds": [], "prompt": 0, "reply": 0, "calls": 0})
                found = json.loads((folder / "knowledge_terms.json").read_text(encoding="utf-8"))
                c["seconds"].extend(found.get("call_seconds") or [event["seconds"] / max(found["calls"], 1)])
                c["calls"] += found["calls"]
            else:
                continue
            c["prompt"] += event.get("prompt_tokens", 0)
            c["reply"] += event.get("completion_tokens", 0)
    return out


def rule_predictions(run: Run) -> dict[str, dict[tuple[int, str], tuple[str, str | None]]]:
    """Task -> (seed, sample id) -> (gold, the accepted rules' label or None where none fired), on the test."""
    out: dict[str, dict] = {}
    for task, seed, folder in run.children:
        saved = json.loads((folder / "test_predictions.json").read_text(encoding="utf-8"))
        for i, gold, rule in zip(saved["ids"], saved["gold"], saved["rules"], strict=True):
            out.setdefault(task, {})[(seed, i)] = (gold, rule)
    return out


def paired(base: dict, other: dict, n_boot: int, seed: int = 0) -> dict:
    """Coverage and precision where fired of `other` minus `base` on the test samples both scored."""
    keys = sorted(set(base) & set(other))
    gold = np.array([base[k][0] for k in keys], dtype=object)
    a = np.array([base[k][1] for k in keys], dtype=object)
    b = np.array([other[k][1] for k in keys], dtype=object)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(keys), len(keys))
        draws.append(cov_prec(gold[idx], b[idx]) - cov_prec(gold[idx], a[idx]))
    low, high = np.nanpercentile(np.array(draws), [2.5, 97.5], axis=0)
    point = cov_prec(gold, b) - cov_prec(gold, a)
    return {"n": len(keys), "coverage": [point[0], low[0], high[0]], "precision": [point[1], low[1], high[1]]}


def show_calls(arm: str, c: dict) -> None:
    for who, x in c.items():
        print(f"  {arm} {who}: {x['calls']} calls, median {np.median(x['seconds']):.1f} s a call (mean "
              f"{np.mean(x['seconds']):.1f}); tokens per call {x['prompt'] / max(x['calls'], 1):.0f} prompt + "
              f"{x['reply'] / max(x['calls'], 1):.0f} reply")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["mdsirc", "banking77", "clinc150"],
                        choices=["mdsirc", "banking77", "clinc150"])
    parser.add_argument("--arms", nargs="+", default=["mined", "model", "both"], choices=list(arms(MODEL)))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--shots", type=int, default=10, help="Examples per intent on Banking77 / CLINC150.")
    parser.add_argument("--budget", type=float, default=600.0,
                        help="Wall-clock seconds of the authors per task session, the same for every arm.")
    parser.add_argument("--model", default=MODEL, help="The language model of the model arms (backend:model).")
    parser.add_argument("--bootstrap", type=int, default=1000, help="Bootstrap resamples per CI.")
    parser.add_argument("--home", type=Path, help="Scratch KDSL_HOME for the sessions (default: a temp folder).")
    parser.add_argument("--out", type=Path, help="Write every figure as JSON here.")
    args = parser.parse_args()
    if BASE not in args.arms:
        parser.error(f"--arms needs {BASE!r}: the other arms are compared with it")

    scratch = args.home or Path(tempfile.mkdtemp(prefix="kdsl-authors-"))
    settings = scratch_settings(Settings(), scratch)
    embedder = default_encoders(settings, images=False).embedder
    print(f"# rule authors at {args.budget:.0f} s per task session: {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.2f}; model {args.model}; sessions in {settings.sessions_dir}", flush=True)
    start = time.perf_counter()
    results: dict = {}
    for name in args.datasets:
        runs: dict[str, Run] = {}
        for arm in args.arms:
            overrides = {**arms(args.model)[arm], "budget_seconds": args.budget}
            title = f"; arm {arm}"
            if name == "mdsirc":
                runs[arm] = mdsirc(settings, embedder, args.seeds, None, overrides, title)
            else:
                runs[arm] = few_shot(name, settings, embedder, args.shots, args.seeds, None, scratch, overrides, title)
        out = results.setdefault(name, {})
        for arm, run in runs.items():
            out[arm] = run.report(args.bootstrap)
            out[arm]["calls"] = calls(run)
            show_calls(arm, out[arm]["calls"])
        print(f"\n## {name}: each arm's accepted rules against {BASE}'s on the same test samples "
              "(paired 95% CIs)")
        base = rule_predictions(runs[BASE])
        for arm in args.arms:
            if arm == BASE:
                continue
            other = rule_predictions(runs[arm])
            for task in base:
                d = paired(base[task], other.get(task, {}), args.bootstrap)
                out[arm].setdefault("vs_mined", {})[task] = d
                (c, cl, ch), (p, pl, ph) = d["coverage"], d["precision"]
                print(f"  {arm} - {BASE}, {task} (n {d['n']}): coverage {c:+.3f} [{cl:+.3f}, {ch:+.3f}], "
                      f"precision where fired {p:+.3f} [{pl:+.3f}, {ph:+.3f}]")
    print(f"\ndone in {time.perf_counter() - start:.0f} s; load average now {os.getloadavg()[0]:.2f}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1, default=float), encoding="utf-8")
        print(f"figures: {args.out}")


if __name__ == "__main__":
    main()
