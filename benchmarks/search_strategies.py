"""MCTS vs greedy vs random edits at the same author-token budget, on the MDSIRC dialogue task.

    .venv/bin/python benchmarks/search_strategies.py [--data ../shared/data/www2025-mdsirc] [--seeds 8]
                                                     [--budgets 10000 30000 60000]

The author is the model-free n-gram proposer (`kdsl.search.NgramProposer`): rules on 2-3 character substrings of
the dialogues the current rules get wrong, with token counts of what a model author's prompt of the same error
report would cost. Features are the dialogue fields (no OCR), the fallback is the majority label, the reward is
measured on all 212 dialogues (a benchmark of the search, not of generalisation). Prints, per strategy and token
budget, the mean and spread of the best reward over seeds, the mean best reward reached at fractions of the
budget, and seconds per iteration split into author, report, reward and bookkeeping.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from kdsl.agents.authors import NgramProposer
from kdsl.agents.verifier import majority_fallback
from kdsl.data import load_dataset
from kdsl.rules import RuleEngine, RuleSet
from kdsl.search import STRATEGIES, Reward, SearchConfig, build_error_report
from kdsl.tools.features import SampleFeatures, dialogue_fields

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "www2025-mdsirc"
TASK = "dialogue_intent"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--budgets", type=int, nargs="+", default=[10_000, 30_000, 60_000])
    args = parser.parse_args()

    ds = load_dataset(args.data).for_task(TASK)
    feats = [SampleFeatures(sample_id=s.id, **dialogue_fields(s)) for s in ds.samples]
    tasks, gold = [s.task for s in ds.samples], [s.label for s in ds.samples]
    fallback = [majority_fallback(gold, tasks)[TASK]] * len(gold)
    engine = RuleEngine(feats, tasks)
    by_id = {f.sample_id: f for f in feats}

    def report(rules: RuleSet):
        return build_error_report(TASK, rules, engine, by_id, gold, fallback, ds.label_spaces[TASK])

    print(f"{TASK}: {len(gold)} dialogues, fallback (majority) reward {Reward(engine, gold, fallback)(RuleSet()):.4f}")
    print(f"{'strategy':8} {'tokens':>7} {'best mean':>9} {'sd':>6} {'@25%':>7} {'@50%':>7} {'iters':>6} "
          f"{'ms/iter: author':>15} {'report':>7} {'reward':>7} {'book':>6}")
    for budget in args.budgets:
        for name, cls in STRATEGIES.items():
            results = []
            for seed in range(args.seeds):
                reward = Reward(engine, gold, fallback, task=TASK)  # a fresh memo: no strategy profits from another
                config = SearchConfig(iterations=100_000, budget_tokens=budget, seed=seed)
                results.append(cls(config).search(RuleSet(), NgramProposer(), reward, report))
            best = [r.best_reward for r in results]

            def at(frac: float, results=results, budget=budget) -> float:
                return statistics.mean(max([s.best_reward for s in r.curve if s.tokens <= frac * budget],
                                           default=r.initial_reward) for r in results)

            iters = sum(r.iterations for r in results) or 1
            ms = {k: 1000 * sum(getattr(r.timings, k) for r in results) / iters
                  for k in ("author", "report", "reward", "bookkeeping")}
            print(f"{name:8} {budget:>7} {statistics.mean(best):>9.4f} {statistics.pstdev(best):>6.4f} "
                  f"{at(0.25):>7.4f} {at(0.5):>7.4f} {iters / len(results):>6.0f} {ms['author']:>15.2f} "
                  f"{ms['report']:>7.2f} {ms['reward']:>7.2f} {ms['bookkeeping']:>6.2f}")


if __name__ == "__main__":
    main()
