"""Discovery as a session runs it: MCTS vs greedy vs random edits at the same author-token budget, real author.

Where `benchmarks/search_strategies.py` compares the strategies on all dialogues with the model-free n-gram
proposer, this benchmark builds what `kdsl discover` builds (kdsl/graph/): the session's `prepare` node
loads the task, splits it (search / verify / test, stratified, `--split-seed`) and featurizes it through the
feature cache under KDSL_HOME (OCR text and visual labels of the images: cache hits only, when the cache is warm);
the reward is the weighted F1 on the `search` part with the majority label as the fallback decider, minus the
size cost; the error report and the author are the session's (a `RuleAuthor` on a model backend, or one of the
model-free proposers). For every task, author, seed and strategy it runs one search with the same token budget
and reports:

  * the best reward over time: a step curve of (tokens spent, seconds, best reward), in the JSON, and in the
    summary the best reward reached at fractions of the token budget and at fractions of a common time T (the
    shortest total time of the strategies in that task/author/seed group: equal time, not only equal tokens);
    "@100% tok" counts only what was reached within the budget, "best" also the call that crossed it;
  * seconds per iteration split into author (inside the author's `propose`: the model call, with prompt
    rendering and reply parsing; the model-only part is `author_model_s` in the JSON), verifier (scoring rule sets
    and building error reports: both evaluate rules with the engine) and bookkeeping (everything else: tree,
    selection, copies, checkpoints). An MCTS iteration does not always call the author (it may open a child
    already proposed), so also compare the per-call and per-run figures.

Each run gets a fresh rule engine and reward (no strategy profits from another's caches); a model is loaded once
per author and shared by its runs (its load time is reported apart). Tokens are the model's own counts; the
model-free proposers count what a model's prompt of the same report would cost (4 characters a token). The
budget is checked before each author call, so a run overshoots it by at most one call; a run may also stop
early (greedy converges, a tree or walk runs out of new edits): `stop` and `tokens` say which.

Output: one JSON line per run on stdout as it finishes (and in --out), then markdown tables; `--summarize` prints
the tables again from saved JSON lines (merging several invocations, e.g. one per author).

Examples (2 shared cores: keep the model to one thread, and be nice to other jobs):

    export KDSL_HOME=/tmp/kh OMP_NUM_THREADS=1
    nice -n 10 .venv/bin/python benchmarks/discovery.py --author ngram --budget-tokens 20000 --seeds 2
    nice -n 10 .venv/bin/python benchmarks/discovery.py --author llama_cpp:smollm2-135m-instruct \\
        --budget-tokens 15000 --seeds 1 --out runs/discovery-smollm2.jsonl
    nice -n 10 .venv/bin/python benchmarks/discovery.py --author llama_cpp:qwen2.5-coder-0.5b-instruct \\
        --tasks dialogue_intent --budget-tokens 15000 --seeds 1 --strategies mcts greedy
    nice -n 10 .venv/bin/python benchmarks/discovery.py --author ngram contrast llama_cpp:smollm2-135m-instruct
    .venv/bin/python benchmarks/discovery.py --summarize runs/discovery-*.jsonl

Model packs must already be pulled under KDSL_HOME/models (`kdsl models pull`); nothing is downloaded here.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kdsl.agents.verifier import majority_fallback
from kdsl.config import Settings
from kdsl.data.splits import Split
from kdsl.graph.config import SessionConfig
from kdsl.graph.context import SessionContext
from kdsl.graph.layout import read_json
from kdsl.graph.nodes import prepare
from kdsl.rules import RuleEngine, RuleSet
from kdsl.search import STRATEGIES, Greedy, Reward, SearchConfig, SearchResult, build_error_report
from kdsl.tools.features import FeatureTable

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "www2025-mdsirc"
TASKS = ("dialogue_intent", "image_scene")
TOKEN_FRACTIONS = (0.1, 0.25, 0.5, 0.75, 1.0)
TIME_FRACTIONS = (0.25, 0.5, 1.0)


# --- what a session's prepare / discover nodes build ---------------------------------------------------------------


class TaskInputs:
    """One task prepared as a session prepares it: the search part's features, gold labels and label space."""

    def __init__(self, data: Path, task: str, split_seed: int, images: bool, settings: Settings, folder: Path):
        ctx = SessionContext(SessionConfig(data=data, task=task, author="ngram", seed=split_seed, images=images),
                             settings)
        start = time.perf_counter()
        state: dict[str, Any] = {"session_dir": str(folder), "session_id": folder.name, "task": task}
        state.update(prepare(ctx, state))  # type: ignore[arg-type]
        self.prepare_seconds = time.perf_counter() - start
        self.task = task
        split = Split.load(state["split_path"])
        gold_file = read_json(Path(state["gold_path"]))
        gold_by_id: dict[str, str | None] = gold_file["gold"]
        ids = [i for i in split.ids("search") if gold_by_id.get(i) is not None]  # as SessionContext.part
        self.table = FeatureTable.load(state["features_path"])
        self.rows = self.table.rows(ids)
        self.gold = [str(gold_by_id[i]) for i in ids]
        self.labels: list[str] = gold_file["labels"]
        self.fallback = [majority_fallback(self.gold, [task] * len(self.gold))[task]] * len(self.gold)
        # The fields the session's model-free proposers draw substrings from (kdsl.graph.discover.make_proposer).
        self.fields = ("user_text", "image_text") if images else ("user_text",)

    def engine(self) -> RuleEngine:
        """A fresh engine (empty match caches) over the search part."""
        return RuleEngine(self.rows, [self.task] * len(self.rows))


class Author:
    """An author spec made into proposers: a model is loaded once, a model-free proposer is rebuilt per run
    (`contrast` reads the run's engine)."""

    def __init__(self, spec: str, args: argparse.Namespace, settings: Settings):
        self.spec = spec
        self.backend: Any = None
        self.load_seconds = 0.0
        self.args = args
        if spec not in ("ngram", "contrast"):
            from kdsl.models import load_backend

            options: dict[str, Any] = {}
            if spec.startswith("llama_cpp:"):  # the session passes n_ctx; threads is ours (a shared machine)
                options = {"n_ctx": args.n_ctx, "threads": args.threads}
            start = time.perf_counter()
            self.backend = load_backend(spec, settings, **options)
            self.load_seconds = time.perf_counter() - start

    def proposer(self, inputs: TaskInputs, engine: RuleEngine) -> Any:
        """As kdsl.graph.discover.make_proposer builds it, with this benchmark's k, language and reply budget."""
        from kdsl.agents.authors import AuthorConfig, AuthorContext, RuleAuthor, make_author, model_free_authors

        if self.spec in model_free_authors():
            return make_author(self.spec, AuthorContext(engine=engine, gold=inputs.gold, fields=inputs.fields))

        a = self.args
        return RuleAuthor(self.backend, AuthorConfig(k=a.k, language=a.language, max_tokens=a.max_tokens,
                                                     temperature=a.temperature))

    def close(self) -> None:
        if self.backend is not None and hasattr(self.backend, "close"):
            self.backend.close()


# --- one run -------------------------------------------------------------------------------------------------------


def step_curve(result: SearchResult) -> list[tuple[int, float, float]]:
    """(tokens, seconds, best reward) at the start and wherever the best improved, plus the last step."""
    points = [(0, 0.0, result.initial_reward)]
    for s in result.curve:
        if s.best_reward > points[-1][2]:
            points.append((s.tokens, round(s.elapsed_seconds, 4), s.best_reward))
    if result.curve and result.curve[-1].tokens > points[-1][0]:  # where it ended: tokens spent after the best
        last = result.curve[-1]
        points.append((last.tokens, round(last.elapsed_seconds, 4), last.best_reward))
    return points


def best_at(curve: Sequence[Sequence[float]], *, tokens: float | None = None, seconds: float | None = None) -> float:
    """The best reward reached by that many tokens (or seconds), from the step curve."""
    best = curve[0][2]
    for t, s, r in curve:
        if (tokens is not None and t > tokens) or (seconds is not None and s > seconds):
            break
        best = max(best, r)
    return best


def run_one(inputs: TaskInputs, author: Author, strategy: str, seed: int, args: argparse.Namespace) -> dict:
    engine = inputs.engine()
    reward = Reward(engine, inputs.gold, inputs.fallback, task=inputs.task)
    by_id = {f.sample_id: f for f in inputs.rows}

    def report_fn(rules: RuleSet):  # as kdsl.graph.discover.search_fold: the session's seed picks the examples shown
        return build_error_report(inputs.task, rules, engine, by_id, inputs.gold, inputs.fallback, inputs.labels,
                                  seed=seed)

    proposer = author.proposer(inputs, engine)
    config = SearchConfig(iterations=args.iterations, budget_tokens=args.budget_tokens,
                          budget_seconds=args.budget_seconds, k=args.k, seed=seed)
    cls = STRATEGIES[strategy]
    search = Greedy(config, patience=args.greedy_patience) if cls is Greedy else cls(config)
    result = search.search(RuleSet(), proposer, reward, report_fn)

    t, tot = result.timings, result.totals
    iters = max(result.iterations, 1)
    verifier = t.reward + t.report
    curve = step_curve(result)
    # The first step that reached the best (None: the initial rule set was never beaten).
    best = next((s for s in result.curve if s.best_reward == result.best_reward), None) \
        if result.best_reward > result.initial_reward else None
    return {
        "task": inputs.task, "author": author.spec, "strategy": strategy, "seed": seed,
        "n_search": len(inputs.gold), "budget_tokens": args.budget_tokens, "k": args.k,
        "initial_reward": result.initial_reward, "best_reward": result.best_reward,
        "improvement": result.improvement,
        "best_rules": len(result.best_rules), "best_at_tokens": best.tokens if best else 0,
        "best_at_s": round(best.elapsed_seconds, 3) if best else 0.0,
        "tokens": result.tokens, "prompt_tokens": tot.prompt_tokens, "completion_tokens": tot.completion_tokens,
        "calls": tot.calls, "edits": tot.edits, "duplicates": tot.duplicates, "no_ops": tot.no_ops,
        "invalid": tot.invalid, "iterations": result.iterations, "nodes": len(result.nodes),
        "stop": result.stop_reason,
        "seconds": round(t.total, 4), "author_s": round(t.author, 4), "author_model_s": round(tot.seconds, 4),
        "verifier_s": round(verifier, 4), "reward_s": round(t.reward, 4), "report_s": round(t.report, 4),
        "bookkeeping_s": round(t.bookkeeping, 4),
        "s_per_iter": {"total": t.total / iters, "author": t.author / iters, "verifier": verifier / iters,
                       "bookkeeping": t.bookkeeping / iters},
        "s_per_call": t.author / tot.calls if tot.calls else 0.0,
        "reward_calls": reward.calls, "reward_memo_hits": reward.hits,
        "load_s": round(author.load_seconds, 3), "prepare_s": round(inputs.prepare_seconds, 3),
        "best_rule_set": [f"{r.label} <- {r.when.render()}" for r in result.best_rules.rules],
        "curve": curve,  # [tokens, seconds, best reward], a step function
    }


# --- the summary ---------------------------------------------------------------------------------------------------


def _mean(xs: Sequence[float]) -> float:
    return statistics.mean(xs) if xs else float("nan")


def to_best(row: dict) -> tuple[float, float]:
    """(tokens, seconds) when the run first reached its best reward; (0, 0) when it never beat the initial set."""
    curve = row["curve"]
    return next(((t, sec) for t, sec, r in curve if r >= row["best_reward"]), (0, 0.0)) \
        if row["best_reward"] > row["initial_reward"] else (0, 0.0)


def common_time(rows: list[dict]) -> dict[tuple, float]:
    """Per (task, author, seed): the shortest total time of its strategies, the T of the equal-time columns."""
    out: dict[tuple, float] = {}
    for r in rows:
        key = (r["task"], r["author"], r["seed"])
        out[key] = min(out.get(key, float("inf")), r["seconds"])
    return out


def tables(rows: list[dict]) -> str:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["task"], r["author"], r["strategy"])].append(r)
    T = common_time(rows)
    head = ("| task | author | strategy | runs | initial | best (mean ± sd) | tokens | calls | iters | stop | "
            "s/run | s/iter | author | verifier | book | s/call | to best (tok, s) | invalid |")
    out = ["### Best reward at the same token budget; seconds per iteration by part", "", head,
           "|" + "---|" * (head.count("|") - 1)]
    for (task, author, strategy), rs in groups.items():
        best = [r["best_reward"] for r in rs]
        invalid: dict[str, int] = defaultdict(int)
        for r in rs:
            for k, v in r["invalid"].items():
                invalid[k] += v
        sd = statistics.pstdev(best) if len(best) > 1 else 0.0
        stops = ",".join(sorted({r["stop"] for r in rs}))
        spi = {k: _mean([r["s_per_iter"][k] for r in rs]) for k in ("total", "author", "verifier", "bookkeeping")}
        out.append(
            f"| {task} | {author} | {strategy} | {len(rs)} | {_mean([r['initial_reward'] for r in rs]):.4f} | "
            f"{_mean(best):.4f} ± {sd:.4f} | {_mean([r['tokens'] for r in rs]):.0f} | "
            f"{_mean([r['calls'] for r in rs]):.1f} | {_mean([r['iterations'] for r in rs]):.0f} | {stops} | "
            f"{_mean([r['seconds'] for r in rs]):.1f} | {spi['total']:.3f} | {spi['author']:.3f} | "
            f"{spi['verifier']:.4f} | {spi['bookkeeping']:.4f} | {_mean([r['s_per_call'] for r in rs]):.3f} | "
            f"{_mean([to_best(r)[0] for r in rs]):.0f}, {_mean([to_best(r)[1] for r in rs]):.1f} | "
            f"{dict(invalid) or ''} |")
    cols = [f"@{f:.0%} tok" for f in TOKEN_FRACTIONS] + [f"@{f:.0%} T" for f in TIME_FRACTIONS]
    head = "| task | author | strategy | " + " | ".join(cols) + " | T (s) |"
    out += ["", "### Best reward vs tokens spent (fractions of the budget) and vs seconds (fractions of T, the "
            "shortest run of the group)", "", head, "|" + "---|" * (head.count("|") - 1)]
    for (task, author, strategy), rs in groups.items():
        cells = [_mean([best_at(r["curve"], tokens=f * r["budget_tokens"]) for r in rs]) for f in TOKEN_FRACTIONS]
        ts = [T[(r["task"], r["author"], r["seed"])] for r in rs]
        cells += [_mean([best_at(r["curve"], seconds=f * t) for r, t in zip(rs, ts, strict=True)])
                  for f in TIME_FRACTIONS]
        out.append(f"| {task} | {author} | {strategy} | " + " | ".join(f"{c:.4f}" for c in cells)
                   + f" | {_mean(ts):.1f} |")
    return "\n".join(out)


# --- the command ---------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--author", nargs="+", default=["ngram"], metavar="SPEC",
                   help="one or more authors: 'backend:model' (e.g. llama_cpp:smollm2-135m-instruct, "
                        "llama_cpp:qwen2.5-coder-0.5b-instruct, llama_cpp:qwen2.5-coder-1.5b-instruct), or the "
                        "model-free 'ngram' (random substrings, a floor) or 'contrast' (the session's default). "
                        "Default: ngram")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS, help="default: both MDSIRC tasks")
    p.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES),
                   help="default: all three")
    p.add_argument("--seeds", type=int, default=2, help="search seeds 0..N-1 per task, author and strategy "
                   "(default 2); the seed also picks the error report's examples, as in a session")
    p.add_argument("--budget-tokens", type=int, default=20_000,
                   help="author tokens (prompt + completion) per search, the same for every strategy "
                        "(default 20000; one call of a model author costs about 1500-3000)")
    p.add_argument("--budget-seconds", type=float, default=None,
                   help="also stop a search after this many seconds (a safety cap; a run it stops has not had "
                        "the full token budget, see `stop` in the output)")
    p.add_argument("--iterations", type=int, default=100_000,
                   help="iteration cap per search (default 100000: in effect, tokens decide)")
    p.add_argument("--k", type=int, default=4, help="edits asked of the author per call (session default 4)")
    p.add_argument("--greedy-patience", type=int, default=0,
                   help="extra proposal rounds greedy may fail to improve before it stops (session: 0)")
    p.add_argument("--max-tokens", type=int, default=512, help="reply budget of one author call (session: 512)")
    p.add_argument("--temperature", type=float, default=0.7, help="author sampling temperature (default 0.7)")
    p.add_argument("--language", default="zh", choices=("zh", "en"), help="author instructions' language")
    p.add_argument("--threads", type=int, default=1, help="llama.cpp threads (default 1: a shared machine)")
    p.add_argument("--n-ctx", type=int, default=4096, help="llama.cpp context (the session's 4096)")
    p.add_argument("--data", type=Path, default=DATA, help=f"MDSIRC folder (default {DATA})")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the search/verify/test split (default 0)")
    p.add_argument("--no-images", action="store_true",
                   help="dialogue text only: no OCR text or visual labels (the session's images=False)")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON lines (one per run) here")
    p.add_argument("--summarize", type=Path, nargs="+", default=None, metavar="JSONL",
                   help="run nothing: print the tables of runs saved with --out (several files are merged)")
    p.add_argument("-v", "--verbose", action="store_true", help="log the library's info messages to stderr")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.summarize:
        print(tables([json.loads(line) for path in args.summarize
                      for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]))
        return
    settings = Settings()
    print(f"KDSL_HOME={settings.home}; data {args.data}", file=sys.stderr, flush=True)
    rows: list[dict] = []
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
    out = args.out.open("w", encoding="utf-8") if args.out else None
    try:
        with tempfile.TemporaryDirectory(prefix="kdsl-discovery-") as tmp:
            inputs = {}
            for task in args.tasks:
                inputs[task] = TaskInputs(args.data, task, args.split_seed, not args.no_images, settings,
                                          Path(tmp) / task)
                print(f"{task}: {len(inputs[task].gold)} search samples, {len(inputs[task].labels)} labels, "
                      f"prepared in {inputs[task].prepare_seconds:.1f} s", file=sys.stderr, flush=True)
            for spec in args.author:
                author = Author(spec, args, settings)
                if author.backend is not None:
                    print(f"{spec}: loaded in {author.load_seconds:.1f} s", file=sys.stderr, flush=True)
                try:
                    for task in args.tasks:
                        for seed in range(args.seeds):
                            for strategy in args.strategies:  # interleaved: drift of a busy machine spreads out
                                row = run_one(inputs[task], author, strategy, seed, args)
                                rows.append(row)
                                line = json.dumps(row, ensure_ascii=False)
                                print(line, flush=True)
                                if out:
                                    out.write(line + "\n")
                                    out.flush()
                                print(f"  {task} {spec} {strategy} seed {seed}: best {row['best_reward']:.4f} "
                                      f"(from {row['initial_reward']:.4f}), {row['tokens']} tokens, "
                                      f"{row['calls']} calls, {row['seconds']:.1f} s, stop {row['stop']}",
                                      file=sys.stderr, flush=True)
                finally:
                    author.close()
    finally:
        if out:
            out.close()
    print()
    print(tables(rows))


if __name__ == "__main__":
    main()
