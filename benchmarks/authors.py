"""Each model pack as a rule author on both MDSIRC tasks: validity, quality and cost of its proposed edits.

For every pack and task, the author is asked for K edits from an empty rule set (fallback: the majority label),
once per seed (each seed also samples different examples into the error report). Reported per pack and task:
valid-edit rate (kept / written), drops and repairs by reason, how many proposed rules fire at all, their mean
precision and support on the task's data (RuleEngine + RuleAnalysis), rules with precision >= 0.5 and support >= 3,
distinct labels, and tokens and seconds per call.

    KDSL_HOME=/tmp/kh .venv/bin/python benchmarks/authors.py --seeds 2 --json runs/authors.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np

from kdsl.agents.authors import AuthorConfig, RuleAuthor
from kdsl.agents.verifier import majority_fallback
from kdsl.config import Settings
from kdsl.data import load_dataset
from kdsl.models import load_backend
from kdsl.rules import RuleAnalysis, RuleEngine, RuleSet
from kdsl.search.proposer import build_error_report
from kdsl.tools.features import FeatureTable, SampleFeatures, dialogue_fields

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "www2025-mdsirc"
PACKS = ("smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct")
TASKS = ("dialogue_intent", "image_scene")


def task_inputs(task: str, features_path: Path):
    ds = load_dataset(DATA).for_task(task)
    if task == "image_scene":
        table = FeatureTable.load(features_path)
        feats = {s.id: table[s.id] for s in ds.samples}
    else:
        feats = {s.id: SampleFeatures(sample_id=s.id, **dialogue_fields(s)) for s in ds.samples}
    engine = RuleEngine([feats[s.id] for s in ds.samples], [s.task for s in ds.samples])
    gold = [s.label for s in ds.samples]
    majority = majority_fallback(gold, [s.task for s in ds.samples])[task]
    return ds.label_spaces[task], feats, engine, gold, [majority] * len(gold)


def run(args: argparse.Namespace) -> list[dict]:
    settings = Settings()
    rows = []
    inputs = {task: task_inputs(task, args.features) for task in args.tasks}
    for pack in args.packs:
        backend = load_backend(f"llama_cpp:{pack}", settings, n_ctx=args.n_ctx,
                               **({"threads": args.threads} if args.threads else {}))
        author = RuleAuthor(backend, AuthorConfig(k=args.k, max_tokens=args.max_tokens,
                                                  temperature=args.temperature, language="zh"))
        for task in args.tasks:
            labels, feats, engine, gold, fallback = inputs[task]
            calls, invalid, repaired, rules, written = [], Counter(), Counter(), [], 0
            for seed in range(args.seeds):
                report = build_error_report(task, RuleSet(), engine, feats, gold, fallback, labels,
                                            max_examples=args.examples, seed=seed)
                start = time.perf_counter()
                proposal = author.propose(RuleSet(), report, args.k, seed=seed)
                calls.append((proposal.prompt_tokens, proposal.completion_tokens, time.perf_counter() - start))
                invalid.update(proposal.invalid)
                parse = author.last_parse_
                repaired.update(parse.repaired)
                written += parse.proposed
                rules += [e.rule for e in proposal.edits if e.rule is not None]
                print(f"  {pack} {task} seed {seed}: {len(proposal.edits)} kept, invalid {proposal.invalid}, "
                      f"{proposal.prompt_tokens}+{proposal.completion_tokens} tokens, {proposal.seconds:.1f} s",
                      flush=True)
            stats = RuleAnalysis(engine.fire_matrix(rules), [r.label for r in rules], gold).stats() if rules else []
            firing = [s for s in stats if s.support > 0]
            rows.append({
                "pack": pack, "task": task, "calls": len(calls), "k": args.k,
                "written": written, "kept": len(rules),
                "valid_rate": len(rules) / written if written else 0.0,
                "invalid": dict(invalid), "repaired": dict(repaired),
                "distinct_labels": len({r.label for r in rules}),
                "firing": len(firing),
                "mean_precision_firing": float(np.mean([s.precision for s in firing])) if firing else 0.0,
                "mean_support_firing": float(np.mean([s.support for s in firing])) if firing else 0.0,
                "good_rules": sum(s.precision >= 0.5 and s.support >= 3 for s in stats),
                "prompt_tokens": float(np.mean([c[0] for c in calls])),
                "completion_tokens": float(np.mean([c[1] for c in calls])),
                "seconds_per_call": float(np.mean([c[2] for c in calls])),
                "median_seconds_per_call": float(np.median([c[2] for c in calls])),
                "examples": [{"label": r.label, "when": r.when.render(), "support": s.support,
                              "precision": round(s.precision, 3)} for r, s in zip(rules, stats, strict=True)][:12],
            })
        backend.close()
    return rows


def table(rows: list[dict]) -> str:
    head = ("| pack | task | calls | kept/written | valid | labels | firing | prec (firing) | supp (firing) | "
            "p>=.5&s>=3 | prompt tok | compl tok | s/call | median s/call | dropped | repaired |")
    out = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        out.append(
            f"| {r['pack']} | {r['task']} | {r['calls']} | {r['kept']}/{r['written']} | {r['valid_rate']:.2f} | "
            f"{r['distinct_labels']} | {r['firing']} | {r['mean_precision_firing']:.2f} | "
            f"{r['mean_support_firing']:.1f} | {r['good_rules']} | {r['prompt_tokens']:.0f} | "
            f"{r['completion_tokens']:.0f} | {r['seconds_per_call']:.1f} | {r['median_seconds_per_call']:.1f} | "
            f"{r['invalid']} | {r['repaired']} |")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--packs", nargs="+", default=list(PACKS))
    p.add_argument("--tasks", nargs="+", default=list(TASKS))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=768)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--examples", type=int, default=8, help="examples of each kind in the error report")
    p.add_argument("--n-ctx", type=int, default=4096)
    p.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: its own choice)")
    p.add_argument("--features", type=Path, default=REPO / "runs" / "mdsirc-features.jsonl")
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = p.parse_args()
    rows = run(args)
    print(table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
