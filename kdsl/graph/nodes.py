"""The session graph's nodes. Each reads the files its state names, writes its own files into the session folder,
and returns a partial state update; heavy things (features, engines, the model) stay in memory, not in the state."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from langgraph.types import interrupt

from kdsl import __version__
from kdsl.agents.arbiter import Arbiter, ArbiterConfig
from kdsl.agents.baseline import char_tfidf_lr
from kdsl.agents.decider import LabelDistribution
from kdsl.agents.verifier import RuleVerdict, TaskVerdict, Verdict, Verifier, VerifierConfig
from kdsl.config import Settings
from kdsl.data import SplitConfig, k_shot, load_dataset, split_dataset, stratified_folds, with_test_file
from kdsl.data.splits import Split
from kdsl.graph.layout import (
    ARBITER,
    COMMITTED,
    DECIDER_DIR,
    DECIDER_PREDICTIONS,
    EVALUATION,
    EVENTS,
    FEATURES,
    FOLD_RULES,
    FOLD_SEARCH,
    FOLD_TERMS,
    GOLD,
    INNER_RULES,
    PROGRESS,
    REPORT,
    RULES,
    SEARCH,
    SPLIT,
    TEST_PREDICTIONS,
    VERDICT,
    read_json,
    save_rules,
    write_json,
)
from kdsl.graph.state import SessionState
from kdsl.rules import Rule, RuleEngine, RuleSet, atoms, find_oos_label, out_of_scope_scores, paired_bootstrap, score
from kdsl.rules.analysis import RuleAnalysis
from kdsl.search import (
    STRATEGIES,
    ErrorReport,
    Proposal,
    Reward,
    SearchConfig,
    SearchProgress,
    build_error_report,
    rule_key,
)
from kdsl.search.terms import label_name_rules, label_terms
from kdsl.tools.features import FeatureTable
from kdsl.traces import TraceEvent, TraceLog, digest
from kdsl.traces.events import truncate

if TYPE_CHECKING:
    from kdsl.graph.session import SessionConfig

logger = logging.getLogger(__name__)

ProgressHook = Callable[[SearchProgress], None]

class TracedProposer:
    """Wraps the author (any `EditProposer`) and appends one trace event per call."""

    def __init__(self, inner: Any, log: TraceLog, session: str, best: Callable[[], float | None]):
        self.inner, self.log, self.session, self.best = inner, log, session, best
        self.name = getattr(inner, "name", type(inner).__name__)
        self.model = getattr(inner, "model", self.name)

    def propose(self, rules: RuleSet, report: ErrorReport, k: int, *, seed: int = 0) -> Proposal:
        start = time.perf_counter()
        proposal = self.inner.propose(rules, report, k, seed=seed)
        out = {"edits": [e.key for e in proposal.edits], "invalid": proposal.invalid}
        self.log.append(TraceEvent(
            session=self.session, node="discover", agent="author", model=self.model,
            prompt_tokens=proposal.prompt_tokens, completion_tokens=proposal.completion_tokens,
            seconds=time.perf_counter() - start, input_digest=digest(report.model_dump(mode="json")),
            output=truncate(json.dumps(out, ensure_ascii=False)), reward=self.best()))
        return proposal


class _Part:
    """One split part of the task, ready to score rules on: engine, sample ids and gold labels (labeled only)."""

    def __init__(self, engine: RuleEngine, ids: list[str], gold: list[str]):
        self.engine, self.ids, self.gold = engine, ids, gold


class SessionNodes:
    """The node functions of one session graph, sharing the session's config and an in-memory cache."""

    def __init__(self, config: SessionConfig, settings: Settings, *, on_iteration: ProgressHook | None = None):
        self.config = config
        self.settings = settings
        self.on_iteration = on_iteration
        self._parts: dict[tuple[str, str, int | None, bool, tuple[int, ...]], _Part] = {}
        self._cache: dict[tuple[str, str], Any] = {}
        self._tables: dict[str, FeatureTable] = {}

    # -- helpers ------------------------------------------------------------------------------------------------------
    def traced(self, name: str, fn: Callable[[SessionState], dict]) -> Callable[[SessionState], dict]:
        """The node, appending a node event (seconds, the update it returned) to the session's trace."""

        def node(state: SessionState) -> dict:
            start = time.perf_counter()
            update = fn(state)
            TraceLog(Path(state["session_dir"]) / EVENTS).append(TraceEvent(
                session=state["session_id"], node=name, seconds=time.perf_counter() - start,
                output=truncate(json.dumps(update, ensure_ascii=False, default=str)),
                reward=update.get("best_reward", state.get("best_reward"))))
            logger.info("session %s: %s done in %.1fs", state["session_id"], name, time.perf_counter() - start)
            return update

        node.__name__ = name
        return node

    def _table(self, state: SessionState) -> FeatureTable:
        path = state["features_path"]
        if path not in self._tables:
            self._tables[path] = FeatureTable.load(path)
        return self._tables[path]

    def _part(self, state: SessionState, part: str, fold: int | None = None, held: bool = False,
              exclude: tuple[int, ...] = ()) -> _Part:
        """The labeled samples of a split part; with `fold`, only the search samples of that cross-fitting fold
        (`held`) or of every other fold; with `exclude`, the search samples outside those folds."""
        key = (state["session_dir"], part, fold, held, exclude)
        if key not in self._parts:
            split = Split.load(state["split_path"])
            gold_by_id: dict[str, str | None] = read_json(Path(state["gold_path"]))["gold"]
            ids = [i for i in split.ids(part) if gold_by_id.get(i) is not None]  # type: ignore[arg-type]
            folds = self._decider(state)["folds"] if fold is not None or exclude else {}
            if fold is not None:
                ids = [i for i in ids if (folds[i] == fold) == held]
            if exclude:
                ids = [i for i in ids if folds[i] not in exclude]
            table = self._table(state)
            engine = RuleEngine(table.rows(ids), [state["task"]] * len(ids))
            self._parts[key] = _Part(engine, ids, [str(gold_by_id[i]) for i in ids])
        return self._parts[key]

    def _folds(self, state: SessionState) -> list[int]:
        return sorted(set(self._decider(state)["folds"].values()))

    def _decider(self, state: SessionState) -> dict[str, Any]:
        """decider_predictions.json: the labels, each search sample's fold, and the decider's distributions
        (out-of-fold on search, from the final fit on test)."""
        key = ("decider", state["session_dir"])
        if key not in self._cache:
            self._cache[key] = read_json(Path(state["session_dir"]) / DECIDER_PREDICTIONS)
        return self._cache[key]

    def _distributions(self, state: SessionState, part: str, ids: list[str]) -> list[LabelDistribution]:
        d = self._decider(state)
        labels = tuple(d["labels"])
        return [LabelDistribution(sample_id=i, task=state["task"], labels=labels, probs=tuple(d["probs"][part][i]))
                for i in ids]

    def _fallback(self, state: SessionState, part: str, ids: list[str] | None = None) -> tuple[list[str], list[float]]:
        """What the rules decide together with on each sample of a part, and how sure it is: the decider's label
        and probability (out-of-fold on search: never from a model that saw the sample)."""
        ids = self._part(state, part).ids if ids is None else ids
        dists = self._distributions(state, part, ids)
        return [d.best for d in dists], [d.confidence for d in dists]

    def _fit_decider(self, dataset: Any, split: Split, table: FeatureTable, folder: Path) -> dict:
        """Fit the session's decider on the search split, with cross-fitting: the folds its own cross-validation
        used are the folds the rules are searched and verified over, so no rule search reads a decider probability
        from a model that saw the sample, and no rule is verified on a sample its search saw. The features decider
        is kept in the session folder (deployable); `majority` is each fold's label frequencies."""
        cfg = self.config
        search = [dataset.get(i) for i in split.search if dataset.get(i).label is not None]
        labels = list(dataset.label_spaces[cfg.task])
        test = [dataset.get(i) for i in split.test]
        record: dict[str, Any] = {"decider": cfg.decider, "labels": labels}
        if cfg.decider == "features":
            from kdsl.agents.decider_kinds import default_encoders
            from kdsl.agents.feature_decider import FeatureDecider, FeatureDeciderConfig

            decider = FeatureDecider(FeatureDeciderConfig(seed=cfg.seed, folds=cfg.folds),
                                     default_encoders(self.settings, images=cfg.images), name=f"session-{folder.name}")
            decider.fit(search, table, dataset.label_spaces)
            decider.save(folder / DECIDER_DIR, extra={"data_path": str(Path(cfg.data).resolve()),
                                                      "images": cfg.images, "tasks": [cfg.task],
                                                      "fingerprint": dataset.fingerprint()})
            split.save(folder / DECIDER_DIR / SPLIT)
            oof = {d.sample_id: d for d in decider.out_of_fold()}
            final = {d.sample_id: d for d in decider.predict(test, table)}
            head = decider.heads_[cfg.task]
            record |= {"blocks": head.blocks, "cv_accuracy": head.oof_accuracy, "folds": decider.folds_[cfg.task],
                       "seconds": round(decider.fit_seconds_, 1)}
            probs = {"search": {i: [d.prob(lab) for lab in labels] for i, d in oof.items()},
                     "test": {i: [d.prob(lab) for lab in labels] for i, d in final.items()}}
        else:
            fold_of = stratified_folds([s.label for s in search], min(cfg.folds, len(search)), cfg.seed)
            folds = {s.id: int(f) for s, f in zip(search, fold_of, strict=True)}

            def prior(rows: list[Any]) -> list[float]:
                counts = Counter(s.label for s in rows)
                return [counts[lab] / max(len(rows), 1) for lab in labels]

            by_fold = {k: prior([s for s in search if folds[s.id] != k]) for k in set(folds.values())}
            probs = {"search": {s.id: by_fold[folds[s.id]] for s in search},
                     "test": {s.id: prior(search) for s in test}}
            accuracy = float(np.mean([labels[int(np.argmax(probs["search"][s.id]))] == s.label for s in search]))
            record |= {"cv_accuracy": accuracy, "folds": folds, "seconds": 0.0}
        record["probs"] = probs
        record["parts"] = {p: {i: labels[int(np.argmax(v))] for i, v in probs[p].items()} for p in probs}
        write_json(folder / DECIDER_PREDICTIONS, record)
        return {"decider_cv_accuracy": record["cv_accuracy"], "decider_seconds": record["seconds"]}

    def _proposer(self, state: SessionState, part: _Part) -> Any:
        spec = self.config.author
        fields = self._fields()
        if spec == "ngram":
            from kdsl.search import NgramProposer

            return NgramProposer(fields=fields)
        if spec == "contrast":
            from kdsl.search import ContrastProposer

            return ContrastProposer(part.engine, part.gold, fields=fields)
        from kdsl.agents.author import AuthorConfig, RuleAuthor
        from kdsl.models import load_backend

        backend = load_backend(spec, self.settings, **({"n_ctx": 4096} if spec.startswith("llama_cpp:") else {}))
        return RuleAuthor(backend, AuthorConfig(k=self.config.k, language=self.config.language,
                                                max_tokens=self.config.author_max_tokens))

    # -- the nodes ----------------------------------------------------------------------------------------------------
    def prepare(self, state: SessionState) -> dict:
        """Load the task's data, split it (search / verify / test) and featurize it, into the session folder."""
        cfg, folder = self.config, Path(state["session_dir"])
        dataset = load_dataset(cfg.data, **cfg.columns)
        if cfg.test_data is not None:
            # A separate test file: all of the data is searched (up to k per label with k_shot), the file sealed.
            dataset, test_ids = with_test_file(dataset, load_dataset(cfg.test_data, **cfg.columns))
            dataset = dataset.for_task(cfg.task)
            in_task, sealed = {s.id for s in dataset.samples}, set(test_ids)
            train_ids = [s.id for s in dataset.samples if s.id not in sealed]
            search = k_shot(dataset, cfg.k_shot, ids=train_ids, seed=cfg.seed) if cfg.k_shot else train_ids
            split = Split(dataset=dataset.name, fingerprint=dataset.fingerprint(),
                          config=SplitConfig(search=1.0, verify=0.0, test=0.0, seed=cfg.seed, k_shot=cfg.k_shot),
                          search=tuple(search), verify=(), test=tuple(i for i in test_ids if i in in_task))
        elif cfg.split is not None:
            given = Split.load(cfg.split)
            given.check(dataset)
            dataset = dataset.for_task(cfg.task)
            ids = {s.id for s in dataset.samples}
            # A verify part of a given split is searched too: cross-fitting verifies (see `verify`).
            split = given.model_copy(update={"search": tuple(i for i in (*given.search, *given.verify) if i in ids),
                                             "verify": (), "test": tuple(i for i in given.test if i in ids)})
        else:
            dataset = dataset.for_task(cfg.task)
            # No verify part: rules are verified by cross-fitting over the search part (see `verify`).
            split = split_dataset(dataset, SplitConfig(search=1 - cfg.test, verify=0.0, test=cfg.test,
                                                       seed=cfg.seed, k_shot=cfg.k_shot))
        split.save(folder / SPLIT)
        from kdsl.tools.pipeline import default_builder

        used = {*split.search, *split.test}
        table = default_builder(self.settings, images=cfg.images, progress=False).build(
            [s for s in dataset.samples if s.id in used])
        table.save(folder / FEATURES)
        write_json(folder / GOLD, {"task": cfg.task, "labels": list(dataset.label_spaces[cfg.task]),
                                   "gold": {s.id: s.label for s in dataset.samples}})
        fitted = self._fit_decider(dataset, split, table, folder)
        return {"split_path": str(folder / SPLIT), "features_path": str(folder / FEATURES),
                "gold_path": str(folder / GOLD), "n_search": len(split.search), "n_verify": len(split.verify),
                "n_test": len(split.test), **fitted}

    def discover(self, state: SessionState) -> dict:
        """Search rule sets once per cross-fitting fold, each on the search samples outside that fold, rewarded by
        how the rules fix the decider's out-of-fold predictions there. The budgets are shared out over the folds.
        After each iteration the fold's best set and the spent budgets go to rules.fold<k>.json and progress.json;
        run again after a crash, the search goes on from there. rules.json: the atoms of the folds' sets."""
        folder = Path(state["session_dir"])
        progress_path = folder / PROGRESS
        folds = self._folds(state)
        if progress_path.exists():
            done = read_json(progress_path)
            logger.info("session %s: resuming the search after %d iterations", state["session_id"],
                        done["iterations"])
        else:
            done = {"iterations": 0, "tokens": 0, "elapsed": 0.0, "finished": False, "stop_reason": None,
                    "folds": {}}
        for k in folds:
            fold_done = done["folds"].get(str(k))
            if fold_done is not None and fold_done["finished"]:
                continue
            done = self._search_fold(state, k, len(folds), done)
        merged = self._merge_folds(state)
        rewards = [f["best_reward"] for f in done["folds"].values()]
        initial = [f["initial_reward"] for f in done["folds"].values()]
        reasons = sorted({str(f["stop_reason"]) for f in done["folds"].values()})
        done = {**done, "finished": True, "best_reward": float(np.mean(rewards)),
                "initial_reward": float(np.mean(initial)), "stop_reason": ", ".join(reasons)}
        write_json(progress_path, done)
        return {"rules_path": str(folder / RULES), "iterations": done["iterations"],
                "initial_reward": done["initial_reward"], "best_reward": done["best_reward"],
                "tokens": done["tokens"], "n_rules": len(merged), "stop_reason": done["stop_reason"]}

    @staticmethod
    def _share(total: float | None, k: int, folds: int) -> float | None:
        """Fold k's share of a budget (iterations: whole numbers that add up to the total)."""
        if total is None:
            return None
        if isinstance(total, int):
            return total // folds + (1 if k < total % folds else 0)
        return total / folds

    def _fields(self) -> tuple[str, ...]:
        # OCR text (and its title band) is most of what an image-scene sample has; the dialogue is most of a
        # dialogue sample.
        return ("user_text", "image_text", "image_title") if self.config.images else ("user_text",)

    def _mine(self, state: SessionState, part: _Part) -> list[Rule]:
        """The model-free candidates: each label's most specific terms on these samples, and the terms of the
        labels' own names (the same in every fold: they come from no sample)."""
        names = read_json(Path(state["gold_path"]))["labels"]
        rules = [*label_terms({f: part.engine.texts(f) for f in self._fields()}, part.gold, state["task"],
                              per_label=10, min_support=2, min_lower=0.3),
                 *label_name_rules(names, state["task"], self._fields())]
        return list({r.id: r for r in rules}.values())  # a name's term the samples single out too: once

    def _inner_candidates(self, state: SessionState, k: int, j: int, n_folds: int) -> list[Rule]:
        """The candidates a session would find without folds k and j (a search and the mined terms, on the other
        folds): what verification on fold j sees when fold k plays the unseen test (see `_nested`). Cached in
        rules.fold<k>-<j>.json; the search gets the same share of the budget as an outer fold's."""
        cfg, folder, task = self.config, Path(state["session_dir"]), state["task"]
        path = folder / INNER_RULES.format(k=k, j=j)
        if path.exists():
            return list(RuleSet.load(path))
        part = self._part(state, "search", exclude=tuple(sorted((k, j))))
        labels, confidence = self._fallback(state, "search", part.ids)
        reward = Reward(part.engine, part.gold, labels, task=task, fallback_confidence=confidence)
        table = self._table(state)
        names = read_json(Path(state["gold_path"]))["labels"]

        def report_fn(rules: RuleSet) -> ErrorReport:
            return build_error_report(task, rules, part.engine, table, part.gold, labels, names, seed=cfg.seed)

        iterations = int(self._share(cfg.iterations, j, n_folds) or 0)
        if iterations < 1:  # the outer fold j searched no iteration either: its candidates are the mined terms
            rules = self._mine(state, part)
            save_rules(RuleSet(rules=tuple({r.id: r for r in rules}.values())), path)
            return rules
        proposer = TracedProposer(self._proposer(state, part), TraceLog(folder / EVENTS), state["session_id"],
                                  lambda: None)
        config = SearchConfig(iterations=iterations,
                              budget_seconds=self._share(cfg.budget_seconds, j, n_folds),
                              budget_tokens=None if cfg.budget_tokens is None
                              else int(self._share(cfg.budget_tokens, j, n_folds) or 1),
                              k=cfg.k, seed=cfg.seed + 1000 * k + 100 * j + 7)
        try:
            found = STRATEGIES[cfg.strategy](config).search(RuleSet(), proposer, reward, report_fn).best_rules
        finally:
            backend = getattr(proposer.inner, "backend", None)
            if backend is not None and hasattr(backend, "close"):
                backend.close()
        rules = [*found, *self._mine(state, part)]
        save_rules(RuleSet(rules=tuple({r.id: r for r in rules}.values())), path)
        return rules

    def _search_fold(self, state: SessionState, k: int, n_folds: int, done: dict) -> dict:
        cfg, folder, task = self.config, Path(state["session_dir"]), state["task"]
        part = self._part(state, "search", fold=k, held=False)
        terms_path = folder / FOLD_TERMS.format(k=k)
        if not terms_path.exists():  # each label's most specific terms on the fold's training samples
            save_rules(RuleSet(rules=tuple(self._mine(state, part))), terms_path)
        labels, confidence = self._fallback(state, "search", part.ids)
        reward = Reward(part.engine, part.gold, labels, task=task, fallback_confidence=confidence)
        table = self._table(state)
        rules_path = folder / FOLD_RULES.format(k=k)

        def report_fn(rules: RuleSet) -> ErrorReport:
            return build_error_report(task, rules, part.engine, table, part.gold, labels,
                                      read_json(Path(state["gold_path"]))["labels"], seed=cfg.seed)

        fold = done["folds"].get(str(k)) or {"iterations": 0, "tokens": 0, "elapsed": 0.0,
                                             "initial_reward": reward(RuleSet()),
                                             "best_reward": reward(RuleSet()), "finished": False,
                                             "stop_reason": None}
        initial = RuleSet.load(rules_path) if rules_path.exists() else RuleSet()
        iterations = int(self._share(cfg.iterations, k, n_folds) or 0) - fold["iterations"]
        seconds = self._share(cfg.budget_seconds, k, n_folds)
        tokens = self._share(cfg.budget_tokens, k, n_folds)
        seconds = None if seconds is None else seconds - fold["elapsed"]
        tokens = None if tokens is None else int(tokens) - fold["tokens"]
        if iterations <= 0 or (seconds is not None and seconds <= 0) or (tokens is not None and tokens <= 0):
            fold = {**fold, "finished": True, "stop_reason": fold.get("stop_reason") or "budget"}
            save_rules(initial, rules_path)
            done = {**done, "folds": {**done["folds"], str(k): fold}}
            write_json(folder / PROGRESS, done)
            return done
        best = {"reward": fold["best_reward"]}
        proposer = TracedProposer(self._proposer(state, part), TraceLog(folder / EVENTS), state["session_id"],
                                  lambda: best["reward"])
        # A resumed search draws other seeds than the first run did from that point on.
        search_config = SearchConfig(iterations=iterations, budget_seconds=seconds, budget_tokens=tokens, k=cfg.k,
                                     seed=cfg.seed + 1000 * k + fold["iterations"])

        def totals(step: Any) -> tuple[dict, dict]:
            now_fold = {**fold, "iterations": fold["iterations"] + step.iteration,
                        "tokens": fold["tokens"] + step.tokens, "elapsed": fold["elapsed"] + step.elapsed_seconds,
                        "best_reward": best["reward"]}
            now = {**done, "iterations": done["iterations"] + step.iteration, "tokens": done["tokens"] + step.tokens,
                   "elapsed": done["elapsed"] + step.elapsed_seconds, "folds": {**done["folds"], str(k): now_fold}}
            return now_fold, now

        def checkpoint(progress: SearchProgress) -> None:
            step = progress.step
            best["reward"] = max(best["reward"], step.best_reward)
            save_rules(progress.best_rules, rules_path)  # the rules first: progress.json vouches for them
            _, now = totals(step)
            write_json(folder / PROGRESS, now)
            if self.on_iteration is not None:
                self.on_iteration(progress.model_copy(update={"step": step.model_copy(update={
                    "iteration": now["iterations"], "tokens": now["tokens"], "best_reward": best["reward"],
                    "elapsed_seconds": now["elapsed"]})}))

        strategy = STRATEGIES[cfg.strategy](search_config, on_iteration=checkpoint)
        try:
            result = strategy.search(initial, proposer, reward, report_fn)
        finally:
            backend = getattr(proposer.inner, "backend", None)
            if backend is not None and hasattr(backend, "close"):
                backend.close()
        (folder / FOLD_SEARCH.format(k=k)).write_text(result.model_dump_json(indent=1), encoding="utf-8")
        if result.best_reward >= best["reward"] or not rules_path.exists():
            save_rules(result.best_rules, rules_path)
        best["reward"] = max(best["reward"], result.best_reward)
        final_fold = {**fold, "iterations": fold["iterations"] + result.iterations,
                      "tokens": fold["tokens"] + result.tokens, "elapsed": fold["elapsed"] + result.timings.total,
                      "best_reward": best["reward"], "finished": True, "stop_reason": result.stop_reason}
        done = {**done, "iterations": done["iterations"] + result.iterations,
                "tokens": done["tokens"] + result.tokens, "elapsed": done["elapsed"] + result.timings.total,
                "folds": {**done["folds"], str(k): final_fold}}
        write_json(folder / PROGRESS, done)
        if k == 0:  # the report draws one search tree: the first fold's
            (folder / SEARCH).write_text(result.model_dump_json(indent=1), encoding="utf-8")
        return done

    def _fold_rules(self, state: SessionState) -> dict[int, list[Rule]]:
        """Fold -> its candidates: the best rule set of its search and its labels' most specific terms."""
        folder = Path(state["session_dir"])
        out: dict[int, list[Rule]] = {}
        for k in self._folds(state):
            out[k] = [r for name in (FOLD_RULES, FOLD_TERMS) if (folder / name.format(k=k)).exists()
                      for r in RuleSet.load(folder / name.format(k=k)).for_task(state["task"])]
        return out

    def _fold_atoms(self, state: SessionState) -> dict[int, set[str]]:
        """Fold -> the keys of the atoms (single terms, see `kdsl.rules.atoms`) its search proposed."""
        return {k: {rule_key(a) for r in rules for a in atoms(r)} for k, rules in self._fold_rules(state).items()}

    def _merge_folds(self, state: SessionState) -> RuleSet:
        """The candidates: every atom of the folds' rule sets (a term found by several folds once), into
        rules.json. The folds' searches rarely agree on a whole term list, but often on its terms."""
        merged: dict[str, Rule] = {}
        for rules in self._fold_rules(state).values():
            for rule in rules:
                for atom in atoms(rule):
                    merged.setdefault(rule_key(atom), atom)
        rules = RuleSet(rules=tuple(merged.values()))
        save_rules(rules, Path(state["session_dir"]) / RULES)
        return rules

    def _held_out_fires(self, state: SessionState, rules: RuleSet) -> np.ndarray:
        """(search samples, rules): the rule fires on the sample and was proposed by the search of the sample's
        fold, i.e. by a search that never saw the sample. Pooled over folds, these are the verifier's counts."""
        part = self._part(state, "search")
        folds = self._decider(state)["folds"]
        fold_of = np.array([folds[i] for i in part.ids])
        proposed = self._fold_atoms(state)
        mask = np.array([[rule_key(r) in proposed.get(int(f), set()) for r in rules] for f in fold_of], dtype=bool)
        mask = mask.reshape(len(part.ids), len(rules))
        return part.engine.fire_matrix(list(rules)) & mask

    def _ladder(self) -> list[VerifierConfig]:
        """The verifier's bars, loosest first: the session's own, then stricter steps that `verify` climbs until
        the accepted set's nested estimate of precision reaches the session's target."""
        cfg = self.config
        own = VerifierConfig(min_support=cfg.min_support, min_precision_lower=cfg.min_precision_lower,
                             min_precision=cfg.min_precision, seed=cfg.seed)
        if cfg.target_precision is None:
            return [own]
        steps = [own]
        for support, lower, precision in ((4, 0.5, 0.9), (5, 0.5, 0.95), (6, 0.6, 0.95)):
            step = own.model_copy(update={"min_support": max(own.min_support, support),
                                          "min_precision_lower": max(own.min_precision_lower, lower),
                                          "min_precision": max(own.min_precision, precision)})
            if step != steps[-1]:
                steps.append(step)
        return steps

    def _nested(self, state: SessionState, bars: VerifierConfig) -> list[list[Rule]]:
        """For each search sample of fold k, the rules it would meet as unseen test data of a session run without
        fold k: candidates found without fold k (and an inner fold j, see `_inner_candidates`), verified on the
        inner folds, pooled, accepted by the same bars, carrying the statistics counted there. Estimates and the
        arbiter's weight made from these are honest: nothing about fold k's labels chose or counted its rules
        (the decider's out-of-fold predictions the searches read are the one exception, a weak one)."""
        part = self._part(state, "search")
        folds = self._decider(state)["folds"]
        fold_of = np.array([folds[i] for i in part.ids])
        ks = self._folds(state)
        verifier = Verifier(bars)
        out: list[list[Rule]] = [[] for _ in part.ids]
        for k in ks:
            candidates: dict[str, Rule] = {}
            proposed: dict[str, set[int]] = {}
            for j in ks:
                if j == k:
                    continue
                for rule in self._inner_candidates(state, k, j, len(ks)):
                    for atom in atoms(rule):
                        key = rule_key(atom)
                        candidates.setdefault(key, atom)
                        proposed.setdefault(key, set()).add(j)
            if not candidates:
                continue
            cands = list(candidates.values())
            fired = part.engine.fire_matrix(cands)
            held = fired & np.stack([np.isin(fold_of, sorted(proposed[key])) for key in candidates], axis=1)
            stats = RuleAnalysis(held, [r.label for r in cands], part.gold).stats()
            ok = [verifier.judge(st)[0] for st in stats]
            carried = [r.model_copy(update={"stats": st}) for r, st in zip(cands, stats, strict=True)]
            for i in np.flatnonzero(fold_of == k):
                out[i] = [carried[c] for c in np.flatnonzero(fired[i]) if ok[c]]
        return out

    def verify(self, state: SessionState) -> dict:
        """Cross-fitted verification: each rule is scored on the folds whose search proposed it without seeing them,
        the counts pooled over folds (no samples are set aside for a verify split). A rule is kept when the pooled
        support, precision lower bound and precision pass the bars; its pooled precision is its estimate. The
        accepted set's precision and coverage are estimated one level further out (see `_nested`); with a target
        precision, the bars are tightened step by step (`_ladder`) until that estimate reaches it."""
        cfg, folder, task = self.config, Path(state["session_dir"]), state["task"]
        part = self._part(state, "search")
        rules = RuleSet.load(state["rules_path"]).for_task(task)
        rule_list = list(rules)
        labels, conf = self._fallback(state, "search")
        tried = []
        for bars in self._ladder():
            nested = self._nested(state, bars)
            best = [max(met, key=lambda r: r.confidence) if met else None for met in nested]
            rule_pred = [r.label if r is not None else None for r in best]
            estimate = score(part.gold, rule_pred)
            tried.append((bars, best, rule_pred, estimate))
            if cfg.target_precision is None or estimate.accuracy_where_fired >= cfg.target_precision:
                break
        else:  # no step reaches the target: the step whose estimate comes closest
            tried.append(max(tried, key=lambda t: (t[3].accuracy_where_fired, t[3].coverage)))
        bars, best, rule_pred, _ = tried[-1]
        logger.info("session %s: verifier bars %s; nested estimates %s", state["session_id"],
                    bars.model_dump(exclude={"bootstrap_resamples", "seed"}),
                    [(t[0].min_support, round(t[3].accuracy_where_fired, 3), round(t[3].coverage, 3))
                     for t in tried])
        verifier = Verifier(bars)
        fired = self._held_out_fires(state, rules)
        stats = RuleAnalysis(fired, [r.label for r in rule_list], part.gold,
                             faults=[part.engine.fault_counts.get(r.id, 0) for r in rule_list]).stats()
        proposed = self._fold_atoms(state)
        verdicts = []
        for rule, st in zip(rule_list, stats, strict=True):
            ok, why = verifier.judge(st)
            n_proposed = sum(rule_key(rule) in keys for keys in proposed.values())
            verdicts.append(RuleVerdict(rule_id=rule.id, label=rule.label, task=rule.task,
                                        condition=rule.when.render(), statement=rule.statement, stats=st,
                                        accepted=ok, reason=f"{why}; proposed in {n_proposed} of {len(proposed)} "
                                        "folds", folds=n_proposed))
        accepted = [i for i, v in enumerate(verdicts) if v.accepted]
        # Where a rule fires it decides if it is surer than the decider (the search's own arbitration).
        together = [r.label if r is not None and r.confidence > c else d
                    for r, d, c in zip(best, labels, conf, strict=True)]
        boot = paired_bootstrap(part.gold, together, labels, seed=cfg.seed)
        verdict = Verdict(split=f"search, cross-fitted over {len(proposed)} folds", n_samples=len(part.ids),
                          config=bars, rules=tuple(verdicts),
                          tasks=(TaskVerdict(task=task, rules=score(part.gold, rule_pred),
                                             fallback_name=self._decider_name(state),
                                             fallback=score(part.gold, labels),
                                             rules_with_fallback=score(part.gold, together), bootstrap=boot),))
        (folder / VERDICT).write_text(verdict.model_dump_json(indent=1), encoding="utf-8")
        return {"verdict_path": str(folder / VERDICT), "accepted": [rule_list[i].id for i in accepted]}

    def _decider_name(self, state: SessionState) -> str:
        return "features decider" if self._decider(state)["decider"] == "features" else "label prior"

    def review(self, state: SessionState) -> dict:
        """Pause for a person: the resume value is the list of the rule ids they keep."""
        verdict = Verdict.model_validate_json(Path(state["verdict_path"]).read_text(encoding="utf-8"))
        shown = [{"id": v.rule_id, "label": v.label, "statement": v.statement, "condition": v.condition,
                  "precision": v.stats.precision, "support": v.stats.support}
                 for v in verdict.rules if v.rule_id in state["accepted"]]
        kept = interrupt({"session": state["session_id"], "rules": shown})
        kept_ids = set(kept or [])
        return {"accepted": [i for i in state["accepted"] if i in kept_ids], "reviewed": True}

    def commit(self, state: SessionState) -> dict:
        """Write the accepted rules, with their verify statistics, into the rule memory. Safe to run again: the
        memory merges an equivalent rule, and a session's measurement replaces its own earlier one."""
        folder = Path(state["session_dir"])
        if not state["accepted"]:
            return {"committed": []}
        from kdsl.memory import RuleMemory

        verdict = Verdict.model_validate_json(Path(state["verdict_path"]).read_text(encoding="utf-8"))
        stats = {v.rule_id: v.stats for v in verdict.rules}
        by_id = {r.id: r for r in RuleSet.load(state["rules_path"])}
        committed = []
        with RuleMemory(self.config.memory, settings=self.settings) as memory:
            for rule_id in state["accepted"]:
                rule = by_id[rule_id]
                rule = rule.model_copy(update={
                    "status": "accepted", "stats": stats[rule_id],
                    "origin": rule.origin.model_copy(update={"session": state["session_id"]})})
                committed.append(memory.add(rule).rule_id)
        write_json(folder / COMMITTED, committed)
        return {"committed": committed}

    def _accepted_rules(self, state: SessionState) -> list[Rule]:
        """The accepted rules, carrying their cross-fitted statistics (what ranks and weighs them)."""
        verdict = Verdict.model_validate_json(Path(state["verdict_path"]).read_text(encoding="utf-8"))
        stats = {v.rule_id: v.stats for v in verdict.rules}
        kept = set(state["accepted"])
        return [r.model_copy(update={"stats": stats[r.id]}) for r in RuleSet.load(state["rules_path"])
                if r.id in kept]

    def arbiter(self, state: SessionState) -> dict:
        """Fit the arbiter on cross-fitted data: each search sample's out-of-fold decider distribution and the
        accepted rules it would meet as unseen data (`_nested`), so the weight it learns is the one that holds on
        samples neither side was fitted on."""
        folder = Path(state["session_dir"])
        part = self._part(state, "search")
        rules = self._accepted_rules(state)
        bars = Verdict.model_validate_json(Path(state["verdict_path"]).read_text(encoding="utf-8")).config
        on_sample = self._nested(state, bars)
        arbiter = Arbiter(ArbiterConfig(policy="stacked"))
        dists = self._distributions(state, "search", part.ids)
        weights = arbiter.fit(dists, on_sample, part.gold)
        # What the rules are expected to add, on the same cross-fitted data (the weight is one number per task
        # chosen over a short grid, so reusing these samples for the estimate flatters it little).
        together = [d.label for d in arbiter.decide_all(dists, on_sample)]
        alone = [d.best for d in dists]
        boot = paired_bootstrap(part.gold, together, alone, seed=self.config.seed)
        estimated = {"decider": score(part.gold, alone).weighted_f1, "together": score(part.gold, together).weighted_f1,
                     "delta": boot.delta, "delta_low": boot.low, "delta_high": boot.high,
                     "changed": sum(a != b for a, b in zip(together, alone, strict=True)),
                     "fixed": sum(a != b and a == g for a, b, g in zip(together, alone, part.gold, strict=True)),
                     "broken": sum(a != b and b == g for a, b, g in zip(together, alone, part.gold, strict=True))}
        write_json(folder / ARBITER, {"policy": "stacked", "weights": weights, "estimated": estimated})
        if (folder / DECIDER_DIR).is_dir():  # the session is a deployable model: serve / predict / eval --session
            from kdsl.agents.collaboration import ArbiterState, Collaboration

            Collaboration(rules=RuleSet(rules=tuple(rules)), arbiters={
                "together:stacked": ArbiterState(config=ArbiterConfig(policy="stacked"), weights=weights),
                "together:rules_first": ArbiterState(config=ArbiterConfig(policy="rules_first")),
                "together:decider_first": ArbiterState(config=ArbiterConfig(policy="decider_first")),
            }).save(folder / DECIDER_DIR)
        return {"arbiter_weights": weights, "arbiter_estimate": estimated}

    def evaluate(self, state: SessionState) -> dict:
        """On the sealed test split: the accepted rules alone, the decider alone, and the two together under the
        fitted arbiter; each rule's estimated (cross-fitted) precision beside the precision realized here."""
        cfg, folder = self.config, Path(state["session_dir"])
        part = self._part(state, "test")
        rules = self._accepted_rules(state)
        fired = part.engine.fire_matrix(rules)
        prediction = part.engine.predict(rules, [r.confidence for r in rules], fired=fired)
        rule_pred = list(prediction.labels)
        dists = self._distributions(state, "test", part.ids)
        base = [d.best for d in dists]
        weights = read_json(folder / ARBITER)["weights"] if (folder / ARBITER).exists() else {}
        arbiter = Arbiter(ArbiterConfig(policy="stacked"), weights)
        decisions = arbiter.decide_all(dists, [[rules[j] for j in np.flatnonzero(row)] for row in fired])
        together = [d.label for d in decisions]
        boot = paired_bootstrap(part.gold, together, base, seed=cfg.seed)
        per_rule = []
        for j, r in enumerate(rules):
            hits = fired[:, j]
            correct = int(sum(1 for i in np.flatnonzero(hits) if part.gold[i] == r.label))
            per_rule.append({"id": r.id, "label": r.label, "estimated_precision": r.stats.precision,
                             "estimated_support": r.stats.support, "test_support": int(hits.sum()),
                             "test_correct": correct})
        verdict = Verdict.model_validate_json(Path(state["verdict_path"]).read_text(encoding="utf-8"))
        estimated = verdict.tasks[0].rules if verdict.tasks else None
        rules_scores = score(part.gold, rule_pred)
        # The baseline a person would try first, fitted on the same search samples as the decider.
        search, table = self._part(state, "search"), self._table(state)
        baseline = char_tfidf_lr([table[i].all_text for i in search.ids], search.gold,
                                 [table[i].all_text for i in part.ids])
        evaluation = {"split": "test", "n": len(part.gold), "fallback_name": self._decider_name(state),
                      "rules": rules_scores.model_dump(), "fallback": score(part.gold, base).model_dump(),
                      "rules_with_fallback": score(part.gold, together).model_dump(),
                      "bootstrap": boot.model_dump(), "arbiter": {"policy": "stacked", "weights": weights},
                      "baseline": {"name": "char TF-IDF + LR", **score(part.gold, baseline).model_dump(),
                                   "together_minus_baseline": paired_bootstrap(part.gold, together, baseline,
                                                                               seed=cfg.seed).model_dump()},
                      "precision": {"estimated": estimated.accuracy_where_fired if estimated else None,
                                    "estimated_coverage": estimated.coverage if estimated else None,
                                    "realized": rules_scores.accuracy_where_fired,
                                    "realized_coverage": rules_scores.coverage},
                      "per_rule": per_rule}
        names = read_json(Path(state["gold_path"]))["labels"]
        oos = find_oos_label(names, cfg.oos_label if cfg.oos_label in names else None)
        if oos is not None:  # out-of-scope data: how the in-scope samples fare, how many out-of-scope are caught
            evaluation["out_of_scope"] = {
                "label": oos, **{name: out_of_scope_scores(part.gold, pred, oos).model_dump()
                                 for name, pred in (("fallback", base), ("rules", rule_pred),
                                                    ("rules_with_fallback", together), ("baseline", baseline))}}
        write_json(folder / EVALUATION, evaluation)
        write_json(folder / TEST_PREDICTIONS, {"ids": part.ids, "gold": part.gold, "rules": rule_pred,
                                               "decider": base, "together": together, "baseline": baseline,
                                               "sources": [d.source for d in decisions]})
        return {"test_scores": {
            "rules_coverage": evaluation["rules"]["coverage"],
            "rules_accuracy_where_fired": evaluation["rules"]["accuracy_where_fired"],
            "fallback_weighted_f1": evaluation["fallback"]["weighted_f1"],
            "with_rules_weighted_f1": evaluation["rules_with_fallback"]["weighted_f1"],
            "delta_weighted_f1": boot.delta, "delta_low": boot.low, "delta_high": boot.high}}

    def report(self, state: SessionState) -> dict:
        """Everything a person or a script reads about the session, in report.json."""
        folder = Path(state["session_dir"])
        verdict = Verdict.model_validate_json(Path(state["verdict_path"]).read_text(encoding="utf-8"))
        by_id = {r.id: r for r in RuleSet.load(state["rules_path"])}
        accepted = [{"id": v.rule_id, "label": v.label, "statement": v.statement, "condition": v.condition,
                     "support": v.stats.support, "precision": v.stats.precision,
                     "precision_lower": v.stats.precision_lower, "author": by_id[v.rule_id].origin.author}
                    for v in verdict.rules if v.rule_id in set(state["accepted"])]
        events = TraceLog(folder / EVENTS).read()
        report = {
            "session_id": state["session_id"], "kdsl_version": __version__,
            "config": self.config.model_dump(mode="json"),
            "data": {"split": state["split_path"], "search": state["n_search"], "verify": state["n_verify"],
                     "test": state["n_test"]},
            "search": {"iterations": state["iterations"], "initial_reward": state["initial_reward"],
                       "best_reward": state["best_reward"], "tokens": state["tokens"], "rules": state["n_rules"],
                       "stop_reason": state["stop_reason"]},
            "verify": {"rules": len(verdict.rules), "accepted": len(accepted), "split": verdict.split,
                       "min_precision": self.config.min_precision},
            "decider": {"name": self._decider_name(state), "cv_accuracy": state.get("decider_cv_accuracy"),
                        "seconds": state.get("decider_seconds"), "arbiter_weights": state.get("arbiter_weights"),
                        "estimated_gain": state.get("arbiter_estimate")},
            "accepted_rules": accepted,
            "committed": state.get("committed", []),
            "test": read_json(folder / EVALUATION),
            "costs": {"author_calls": sum(1 for e in events if e.agent == "author"),
                      "tokens": sum(e.tokens for e in events if e.agent == "author"),
                      "author_seconds": sum(e.seconds for e in events if e.agent == "author")},
        }
        write_json(folder / REPORT, report)
        return {"report_path": str(folder / REPORT)}
