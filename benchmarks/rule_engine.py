"""How fast the compiled engine re-scores a 200-rule set over the 705 MDSIRC samples, against a naive loop.

    .venv/bin/python benchmarks/rule_engine.py [--data ../shared/data/www2025-mdsirc] [--rules 200]

Features come from the feature cache (`kdsl features build` first, or this builds them, about 12 minutes the
first time). The naive loop evaluates every rule on every sample with `Condition.matches` over fields normalised
once per sample, then picks the most confident firing rule: what a straightforward implementation does.
Three engine figures: cold (a new engine: every term scanned once), warm terms (a rule set never seen before
whose terms the engine has seen: the search's case) and warm (the same set again: everything cached).
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import numpy as np

from kdsl.config import Settings
from kdsl.data import load_dataset
from kdsl.rules import Rule, RuleEngine, normalize, parse_rule
from kdsl.tools.features import FIELDS
from kdsl.tools.pipeline import default_builder

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "www2025-mdsirc"


def random_rules(features, labels_by_task, n: int, seed: int) -> list[Rule]:
    """Rules shaped like an author's: 1-4 real terms of a field, sometimes AND NOT another term or a regex."""
    rng = random.Random(seed)
    pools = {f: [t for row in features if (t := row.field(f))] for f in FIELDS if f != "image_labels"}
    pools = {f: p for f, p in pools.items() if p}

    def term(field: str) -> str:
        while True:
            text = rng.choice(pools[field])
            i = rng.randrange(max(1, len(text) - 3))
            t = text[i : i + rng.choice([2, 2, 3, 4])]
            if normalize(t) and "\n" not in t:
                return t

    rules = []
    tasks = list(labels_by_task)
    while len(rules) < n:
        field = rng.choice(list(pools))
        task = rng.choice(tasks)
        cond: dict = {"field": field, rng.choice(["any_of", "all_of"]): [term(field) for _ in range(rng.randint(1, 4))]}
        roll = rng.random()
        if roll < 0.3:
            cond = {"and": [cond, {"not": {"field": field, "any_of": [term(field)]}}]}
        elif roll < 0.4:
            cond = {"or": [cond, {"field": field, "regex": f"{term(field)}.{{0,8}}{term(field)}".replace("\\", "")}]}
        try:
            rules.append(parse_rule({"label": rng.choice(labels_by_task[task]), "task": task, "when": cond}))
        except ValueError:
            continue  # a term with a regex metacharacter; draw again
    return rules


def naive_predict(rules, features, tasks, conf):
    out = []
    for row, task in zip(features, tasks, strict=True):
        fields = {name: normalize(row.field(name)) for name in FIELDS}
        best, best_conf = None, -1.0
        for rule, c in zip(rules, conf, strict=True):
            if rule.task == task and c > best_conf and rule.when.matches(fields):
                best, best_conf = rule.label, c
        out.append(best)
    return out


def timed(fn, repeat: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--rules", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    dataset = load_dataset(args.data)
    features = default_builder(Settings(), progress=True).build(dataset).rows(s.id for s in dataset.samples)
    tasks = [s.task for s in dataset.samples]
    labels = {t: list(ls) for t, ls in dataset.label_spaces.items()}
    rules = random_rules(features, labels, args.rules, args.seed)
    other = random_rules(features, labels, args.rules, args.seed + 1)  # new sets, partly shared vocabulary
    conf = np.random.default_rng(args.seed).random(len(rules))

    t_naive, naive = timed(lambda: naive_predict(rules, features, tasks, conf), repeat=3)

    def cold():
        return RuleEngine(features, tasks).predict(rules, conf)

    t_cold, pred = timed(cold, repeat=3)
    assert list(pred.labels) == naive, "engine and naive loop disagree"

    engine = RuleEngine(features, tasks)
    engine.predict(rules, conf)
    engine.predict(other, conf)  # terms of `other` now scanned; its conditions' cache is what we drop below
    engine.clear_conditions()
    t_terms, _ = timed(lambda: engine.predict(other, conf), repeat=1)
    t_warm, _ = timed(lambda: engine.predict(rules, conf), repeat=20)

    fired = engine.fire_matrix(rules)
    print(f"{len(dataset)} samples, {len(rules)} rules, {int(fired.any(0).sum())} rules fire somewhere, "
          f"{fired.any(1).mean():.0%} samples covered, {engine.n_cached_terms} cached terms")
    print(f"naive per-sample loop      : {t_naive * 1e3:9.2f} ms per rule-set evaluation "
          f"({1 / t_naive:8.1f}/s)")
    for name, t in [("engine, cold", t_cold), ("engine, warm terms", t_terms), ("engine, warm", t_warm)]:
        print(f"{name:<27}: {t * 1e3:9.3f} ms per rule-set evaluation ({1 / t:8.1f}/s), "
              f"{t_naive / t:7.1f}x the naive loop")


if __name__ == "__main__":
    main()
