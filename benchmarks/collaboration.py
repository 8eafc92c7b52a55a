"""Rules and the decider together against the decider alone, in discovery sessions run as a user runs them, on
sealed test samples none of them saw; beside the simple baselines fitted on the same training samples.

    .venv/bin/python benchmarks/collaboration.py                              # MDSIRC x5 seeds, Banking77 / CLINC150
    .venv/bin/python benchmarks/collaboration.py --datasets mdsirc --seeds 0 1 2 3 4
    .venv/bin/python benchmarks/collaboration.py --datasets banking77 clinc150 --seeds 0 1 2 --shots 10
    .venv/bin/python benchmarks/collaboration.py --datasets mdsirc --seeds 0 1 --term-author \
        llama_cpp:qwen2.5-coder-1.5b-instruct     # sessions that also ask a model for each label's terms

- MDSIRC: one session per seed (`kdsl discover` without --task: a child session per task), each with its own
  seeded 80/20 split; the test predictions of the seeds are pooled per task; overall = the mean of the tasks.
- Banking77 / CLINC150: the session is given a split file: k examples per intent drawn from the training data (CLINC150
  keeps its out-of-scope training queries, label `oos`) to search on, the official test set sealed.
- Per task and overall: the decider alone, the accepted rules alone (coverage, precision where they fire), the two
  together under the session's fitted arbiter, and majority / char TF-IDF + LR / e5 + LR fitted on the session's
  training samples; 95% bootstrap CIs, and the paired CI of together minus the decider. The rules' precision
  estimated by cross-fitting (pooled over the training folds) beside the precision realized on the test samples.
Nothing is chosen by looking at a test split: the session reads its sealed test once, after everything is fitted.
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
from quality import DATA, Pool, Scored, baselines, bootstrap  # noqa: E402

from kdsl.agents.decider_kinds import default_encoders  # noqa: E402
from kdsl.config import Settings  # noqa: E402
from kdsl.data import Split, SplitConfig, k_shot, load_dataset  # noqa: E402
from kdsl.graph import SessionConfig, run_session  # noqa: E402
from kdsl.tools.pipeline import default_builder  # noqa: E402

SESSION_METHODS = ("decider", "rules", "together")


def scratch_settings(real: Settings, root: Path) -> Settings:
    """A KDSL_HOME of its own (sessions, rule memory) that shares the real one's caches and model packs."""
    root.mkdir(parents=True, exist_ok=True)
    if real.home.is_dir():
        for entry in real.home.iterdir():
            if entry.name not in ("sessions", "memory") and not (root / entry.name).exists():
                (root / entry.name).symlink_to(entry)
    return Settings(home=root)


def fragment_terms(folder: Path, dataset, search_ids) -> list[str]:
    """Accepted terms of a spaced script that never stand as whole words in the search samples' text, though they
    occur inside longer words there (`ncel` in `cancel`): what no person would sign."""
    from kdsl.rules import RuleSet, normalize
    from kdsl.rules.normalize import contains_term, is_word_char

    report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    accepted = {r["id"] for r in report["accepted_rules"]}
    texts = [normalize(" ".join(t.text for t in dataset.get(i).turns)) for i in search_ids]
    out = []
    for rule in RuleSet.load(folder / "rules.json"):
        terms = getattr(rule.when, "any_of", ()) if rule.id in accepted else ()
        for term in map(normalize, terms):
            if not any(is_word_char(c) for c in term):
                continue
            inside = any(term in t for t in texts)
            if inside and not any(contains_term(t, term) for t in texts):
                out.append(term)
    return out


class Run:
    """One dataset's sessions and baselines, pooled over seeds."""

    def __init__(self, name: str, label_spaces: dict):
        self.name = name
        self.label_spaces = label_spaces
        self.pool = Pool()
        self.children: list[tuple[str, int, Path]] = []  # (task, seed, session folder) of every task session
        self.per_task: dict[str, dict[str, dict[str, float]]] = {}
        self.session_seconds: list[float] = []
        self.accepted: list[int] = []
        self.by_author: dict[str, int] = {}  # accepted rules by who wrote them (label-terms, knowledge:..., ...)
        self.fragments: list[str] = []  # accepted terms that are pieces of longer words
        # Per task: decisions the rules changed, right (fixed) or wrong (broken), estimated by cross-fitting on
        # the training part and realized on the test.
        self.gains: dict[str, dict[str, dict[str, int]]] = {}

    def add(self, session_dir: Path, settings: Settings, dataset, features, embedder, seconds: float,
            seed: int) -> None:
        head = json.loads((session_dir / "config.json").read_text(encoding="utf-8"))
        self.session_seconds.append(seconds)
        for task, child in head["children"].items():
            folder = settings.sessions_dir / child
            self.children.append((task, seed, folder))
            saved = json.loads((folder / "test_predictions.json").read_text(encoding="utf-8"))
            split = Split.load(folder / "split.json")
            train = [dataset.get(i) for i in split.search if dataset.get(i).label is not None]
            test = [dataset.get(i) for i in saved["ids"]]
            self.pool.run(baselines(features, embedder), train, test)
            decider = json.loads((folder / "decider_predictions.json").read_text(encoding="utf-8"))
            for m in SESSION_METHODS:
                self.pool.pred.setdefault(m, {}).setdefault(task, []).extend(
                    p if p is not None else "(other)" for p in saved[m])
                self.pool.fit_s.setdefault(m, []).append(decider.get("seconds", 0.0) if m == "decider" else seconds)
                self.pool.ms.setdefault(m, []).append(float("nan"))
            ev = json.loads((folder / "evaluation.json").read_text(encoding="utf-8"))
            report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
            self.accepted.append(len(report["accepted_rules"]))
            for rule in report["accepted_rules"]:
                who = str(rule.get("author", "?")).split(":")[0]
                self.by_author[who] = self.by_author.get(who, 0) + 1
            self.fragments += fragment_terms(folder, dataset, split.search)
            verdict = json.loads((folder / "verdict.json").read_text(encoding="utf-8"))
            est = verdict["tasks"][0]["rules"] if verdict["tasks"] else None
            r = ev["rules"]
            fired = round(r["coverage"] * r["n"])
            t = self.per_task.setdefault(task, {"fired": {"est": 0.0, "real": 0}, "correct": {"est": 0.0, "real": 0},
                                               "n": {"est": 0, "real": 0}})
            if est:
                t["fired"]["est"] += est["coverage"] * est["n"]
                t["correct"]["est"] += est["accuracy_where_fired"] * est["coverage"] * est["n"]
                t["n"]["est"] += est["n"]
            t["fired"]["real"] += fired
            arb = json.loads((folder / "arbiter.json").read_text(encoding="utf-8")).get("estimated") or {}
            gain = self.gains.setdefault(task, {"est": {"fixed": 0, "broken": 0, "n": 0},
                                                "real": {"fixed": 0, "broken": 0, "n": 0}})
            gain["est"]["fixed"] += arb.get("fixed", 0)
            gain["est"]["broken"] += arb.get("broken", 0)
            gain["est"]["n"] += len(split.search)
            for g, tog, dec in zip(saved["gold"], saved["together"], saved["decider"], strict=True):
                gain["real"]["fixed"] += tog != dec and tog == g
                gain["real"]["broken"] += tog != dec and dec == g
            gain["real"]["n"] += len(saved["gold"])
            t["correct"]["real"] += round(r["accuracy_where_fired"] * fired)
            t["n"]["real"] += r["n"]

    def report(self, n_boot: int) -> dict:
        pool, tasks, label_spaces = self.pool, list(self.pool.gold), self.label_spaces
        scored = {m: {t: Scored(pool.gold[t], pool.pred[m][t], [*label_spaces[t], "(other)"]) for t in tasks}
                  for m in pool.pred}
        out: dict = {"title": self.name, "n": {t: len(pool.gold[t]) for t in tasks}, "methods": {}, "together": {},
                     "rules": {}}
        print(f"\n## {self.name}  (pooled test n = {', '.join(f'{t} {len(pool.gold[t])}' for t in tasks)}; "
              f"accepted rules per session and task: {self.accepted}, by author {self.by_author}; session "
              f"{np.mean(self.session_seconds):.0f} s)")
        scopes = [(t, [t]) for t in tasks] + ([("overall", tasks)] if len(tasks) > 1 else [])
        for scope, ts in scopes:
            print(f"{scope}:")
            print(f"  {'method':10s} {'weighted F1 [95% CI]':26s} {'macro F1 [95% CI]':26s} {'accuracy [95% CI]':26s}")
            for m in scored:
                b = bootstrap([(scored[m][t], None) for t in ts], n_boot)
                cells = [f"{b['point'][i]:.3f} [{b['low'][i]:.3f}, {b['high'][i]:.3f}]" for i in range(3)]
                print(f"  {m:10s} {cells[0]:26s} {cells[1]:26s} {cells[2]:26s}")
                out["methods"].setdefault(m, {})[scope] = b
            d = bootstrap([(scored["together"][t], scored["decider"][t]) for t in ts], n_boot)["diff"]
            out["together"][scope] = d
            print(f"  together - decider, weighted F1: {d['point'][0]:+.4f} [{d['low'][0]:+.4f}, {d['high'][0]:+.4f}]"
                  f"   accuracy: {d['point'][2]:+.4f} [{d['low'][2]:+.4f}, {d['high'][2]:+.4f}]")
            if scope != "overall":
                t = self.per_task[scope]
                est_p = t["correct"]["est"] / t["fired"]["est"] if t["fired"]["est"] else float("nan")
                real_p = t["correct"]["real"] / t["fired"]["real"] if t["fired"]["real"] else float("nan")
                est_c = t["fired"]["est"] / max(t["n"]["est"], 1)
                real_c = t["fired"]["real"] / max(t["n"]["real"], 1)
                out["rules"][scope] = {"estimated_precision": est_p, "realized_precision": real_p,
                                       "estimated_coverage": est_c, "realized_coverage": real_c}
                print(f"  rules: precision where fired estimated {est_p:.3f} / realized {real_p:.3f}; coverage "
                      f"estimated {est_c:.3f} / realized {real_c:.3f}")
                g = self.gains.get(scope)
                if g:
                    out.setdefault("changed", {})[scope] = g
                    print("  decisions the rules changed, fixed / broken per 100 samples: estimated "
                          f"{100 * g['est']['fixed'] / max(g['est']['n'], 1):.2f} / "
                          f"{100 * g['est']['broken'] / max(g['est']['n'], 1):.2f}, realized "
                          f"{100 * g['real']['fixed'] / max(g['real']['n'], 1):.2f} / "
                          f"{100 * g['real']['broken'] / max(g['real']['n'], 1):.2f}")
        out["fragment_terms"] = self.fragments
        print(f"accepted terms that are fragments of a longer word: {len(self.fragments)}"
              f"{' (' + ', '.join(self.fragments[:10]) + ')' if self.fragments else ''}")
        # Pooled over tasks and seeds: the sums of the per-task counts.
        fired = {k: sum(t["fired"][k] for t in self.per_task.values()) for k in ("est", "real")}
        right = {k: sum(t["correct"][k] for t in self.per_task.values()) for k in ("est", "real")}
        est_p = right["est"] / fired["est"] if fired["est"] else float("nan")
        real_p = right["real"] / fired["real"] if fired["real"] else float("nan")
        out["rules"]["pooled"] = {"estimated_precision": est_p, "realized_precision": real_p}
        print(f"pooled over tasks and seeds: rules' precision estimated {est_p:.3f}, realized {real_p:.3f} "
              f"(difference {real_p - est_p:+.3f})")
        return out


def mdsirc(settings: Settings, embedder, seeds: list[int], iterations: int | None, overrides: dict | None = None,
           title: str = "") -> Run:
    """One MDSIRC session per seed (`overrides`: SessionConfig fields, e.g. the authors); call `.report()`."""
    dataset = load_dataset(DATA / "www2025-mdsirc")
    features = default_builder(settings, images=True, progress=False).build(dataset.samples)
    run = Run(f"MDSIRC, {len(seeds)} seeded 80/20 splits pooled{title}", dataset.label_spaces)
    for seed in seeds:
        print(f"MDSIRC seed {seed}{title} ...", flush=True)
        config = SessionConfig(data=DATA / "www2025-mdsirc", seed=seed,
                               **({"iterations": iterations} if iterations else {}), **(overrides or {}))
        start = time.perf_counter()
        outcome = run_session(config, settings)
        run.add(outcome.session_dir, settings, dataset, features, embedder, time.perf_counter() - start, seed)
    return run


def few_shot(name: str, settings: Settings, embedder, k: int, seeds: list[int], iterations: int | None,
             scratch: Path, overrides: dict | None = None, title: str = "") -> Run:
    """One session per seed on k examples per intent, the official test set sealed; call `.report()`."""
    full = load_dataset(DATA / name)
    oos = name == "clinc150"
    train_ids = [s.id for s in full.samples if s.meta.get("split") == "train" and s.meta.get("oos") != "true"]
    always = [s.id for s in full.samples if s.meta.get("split") == "train" and s.meta.get("oos") == "true"] if oos \
        else []
    test_ids = [s.id for s in full.samples if s.meta.get("split") == "test"]
    features = default_builder(settings, images=False, progress=False).build(
        [full.get(i) for i in dict.fromkeys([*train_ids, *always, *test_ids])])
    run = Run(f"{name}, {k} per intent, seeds {seeds} pooled (official test set){title}", full.label_spaces)
    for seed in seeds:
        print(f"{name} {k}-shot seed {seed}{title} ...", flush=True)
        split = Split(dataset=full.name, fingerprint=full.fingerprint(), config=SplitConfig(seed=seed, k_shot=k),
                      search=tuple([*k_shot(full, k, ids=train_ids, seed=seed), *always]), verify=(),
                      test=tuple(test_ids))
        path = split.save(scratch / f"{name}-{k}-{seed}.split.json")
        config = SessionConfig(data=DATA / name, seed=seed, split=path, images=False, language="en",
                               **({"iterations": iterations} if iterations else {}), **(overrides or {}))
        start = time.perf_counter()
        outcome = run_session(config, settings)
        run.add(outcome.session_dir, settings, full, features, embedder, time.perf_counter() - start, seed)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["mdsirc", "banking77", "clinc150"],
                        choices=["mdsirc", "banking77", "clinc150"])
    parser.add_argument("--seeds", type=int, nargs="+", help="Default: 0-4 on MDSIRC, 0-2 on the others.")
    parser.add_argument("--shots", type=int, default=10, help="Examples per intent on Banking77 / CLINC150.")
    parser.add_argument("--iterations", type=int, help="Search iterations per session (default: the session's).")
    parser.add_argument("--bootstrap", type=int, default=1000, help="Bootstrap resamples per CI.")
    parser.add_argument("--term-author", help="backend:model the sessions ask for each label's terms (default: none).")
    parser.add_argument("--home", type=Path, help="Scratch KDSL_HOME for the sessions (default: a temp folder).")
    parser.add_argument("--out", type=Path, help="Write every figure as JSON here.")
    args = parser.parse_args()

    real = Settings()
    scratch = args.home or Path(tempfile.mkdtemp(prefix="kdsl-collaboration-"))
    settings = scratch_settings(real, scratch)
    embedder = default_encoders(settings, images=False).embedder
    print(f"# collaboration benchmark: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; sessions in "
          f"{settings.sessions_dir}")
    start = time.perf_counter()
    results = []
    overrides = {"term_author": args.term_author} if args.term_author else {}
    if "mdsirc" in args.datasets:
        results.append(mdsirc(settings, embedder, args.seeds or [0, 1, 2, 3, 4], args.iterations,
                              overrides).report(args.bootstrap))
    for name in ("banking77", "clinc150"):
        if name in args.datasets:
            results.append(few_shot(name, settings, embedder, args.shots, args.seeds or [0, 1, 2], args.iterations,
                                    scratch, overrides).report(args.bootstrap))
    print(f"\ndone in {time.perf_counter() - start:.0f} s; load average now {os.getloadavg()[0]:.2f}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1), encoding="utf-8")
        print(f"figures: {args.out}")


if __name__ == "__main__":
    main()
