"""The session graph's nodes. Each reads the files its state names, writes its own files into the session folder,
and returns a partial state update; heavy things (features, engines, the model) stay in memory, not in the state."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langgraph.types import interrupt

from kdsl import __version__
from kdsl._internal._atomic import write_json_atomic as write_json  # the session's JSON files, written atomically
from kdsl.agents.verifier import Verdict, Verifier, VerifierConfig, majority_fallback
from kdsl.config import Settings
from kdsl.data import SplitConfig, load_dataset, split_dataset
from kdsl.data.splits import Split
from kdsl.graph.state import SessionState
from kdsl.rules import RuleEngine, RuleSet, paired_bootstrap, score, with_fallback
from kdsl.search import STRATEGIES, ErrorReport, Proposal, Reward, SearchConfig, SearchProgress, build_error_report
from kdsl.tools.features import FeatureTable
from kdsl.traces import TraceEvent, TraceLog, digest
from kdsl.traces.events import truncate

if TYPE_CHECKING:
    from kdsl.graph.session import SessionConfig

logger = logging.getLogger(__name__)

ProgressHook = Callable[[SearchProgress], None]

# Files of a session folder.
SPLIT, FEATURES, GOLD, RULES, PROGRESS, SEARCH = (
    "split.json", "features.jsonl", "gold.json", "rules.json", "progress.json", "search.json")
VERDICT, EVALUATION, REPORT, EVENTS, COMMITTED = (
    "verdict.json", "evaluation.json", "report.json", "events.jsonl", "committed.json")
# The session's decider (a deployable `features` decider folder) and its predictions on each part: out-of-fold on
# search, from the final fit on verify and test.
DECIDER_DIR, DECIDER_PREDICTIONS = "decider", "decider_predictions.json"


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def save_rules(rules: RuleSet, path: Path) -> Path:
    tmp = rules.save(path.with_name(path.name + ".tmp"))
    os.replace(tmp, path)
    return path


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
        self._parts: dict[tuple[str, str], _Part] = {}
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

    def _part(self, state: SessionState, part: str) -> _Part:
        key = (state["session_dir"], part)
        if key not in self._parts:
            split = Split.load(state["split_path"])
            gold_by_id: dict[str, str | None] = read_json(Path(state["gold_path"]))["gold"]
            ids = [i for i in split.ids(part) if gold_by_id.get(i) is not None]  # type: ignore[arg-type]
            table = self._table(state)
            engine = RuleEngine(table.rows(ids), [state["task"]] * len(ids))
            self._parts[key] = _Part(engine, ids, [str(gold_by_id[i]) for i in ids])
        return self._parts[key]

    def _fallback_label(self, state: SessionState) -> str:
        """The majority label of the search split (what the rules-alone mode says where no rule fires)."""
        gold = self._part(state, "search").gold
        return majority_fallback(gold, [state["task"]] * len(gold))[state["task"]]

    def _fallback(self, state: SessionState, part: str) -> list[str]:
        """What the rules decide together with on each sample of a part: the decider's label (out-of-fold on
        search), or the majority label when the session runs without a decider."""
        ids = self._part(state, part).ids
        path = Path(state["session_dir"]) / DECIDER_PREDICTIONS
        if self.config.decider == "majority" or not path.is_file():
            return [self._fallback_label(state)] * len(ids)
        predicted = read_json(path)["parts"][part]
        return [predicted[i] for i in ids]

    def _fit_decider(self, dataset: Any, split: Split, table: FeatureTable, folder: Path) -> dict:
        """Fit the features decider on the search split, keep it in the session folder, and write its labels:
        out-of-fold on search (the search never reads a prediction of a model fitted on that sample), from the
        final fit on verify and test."""
        from kdsl.agents.decider_kinds import default_encoders
        from kdsl.agents.feature_decider import FeatureDecider, FeatureDeciderConfig

        cfg = self.config
        search = [dataset.get(i) for i in split.search if dataset.get(i).label is not None]
        decider = FeatureDecider(FeatureDeciderConfig(seed=cfg.seed), default_encoders(self.settings,
                                 images=cfg.images), name=f"session-{folder.name}")
        decider.fit(search, table, dataset.label_spaces)
        decider.save(folder / DECIDER_DIR, extra={"data_path": str(Path(cfg.data).resolve()), "images": cfg.images,
                                                  "tasks": [cfg.task], "fingerprint": dataset.fingerprint()})
        split.save(folder / DECIDER_DIR / SPLIT)
        parts = {"search": {d.sample_id: d.best for d in decider.out_of_fold()}}
        for part in ("verify", "test"):
            samples = [dataset.get(i) for i in split.ids(part)]  # type: ignore[arg-type]
            parts[part] = {d.sample_id: d.best for d in decider.predict(samples, table)}
        head = decider.heads_[cfg.task]
        write_json(folder / DECIDER_PREDICTIONS, {"decider": "features", "blocks": head.blocks,
                                                  "cv_accuracy": head.oof_accuracy, "parts": parts})
        return {"decider_cv_accuracy": head.oof_accuracy, "decider_seconds": round(decider.fit_seconds_, 1)}

    def _proposer(self, state: SessionState) -> Any:
        spec = self.config.author
        # OCR text is most of what an image-scene sample has; the dialogue is most of a dialogue sample.
        fields = ("user_text", "image_text") if self.config.images else ("user_text",)
        if spec == "ngram":
            from kdsl.search import NgramProposer

            return NgramProposer(fields=fields)
        if spec == "contrast":
            from kdsl.search import ContrastProposer

            part = self._part(state, "search")
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
        dataset = load_dataset(cfg.data).for_task(cfg.task)
        split = split_dataset(dataset, SplitConfig(seed=cfg.seed))
        split.save(folder / SPLIT)
        from kdsl.tools.pipeline import default_builder

        table = default_builder(self.settings, images=cfg.images, progress=False).build(dataset.samples)
        table.save(folder / FEATURES)
        write_json(folder / GOLD, {"task": cfg.task, "labels": list(dataset.label_spaces[cfg.task]),
                                   "gold": {s.id: s.label for s in dataset.samples}})
        fitted = self._fit_decider(dataset, split, table, folder) if cfg.decider == "features" else {}
        return {"split_path": str(folder / SPLIT), "features_path": str(folder / FEATURES),
                "gold_path": str(folder / GOLD), "n_search": len(split.search), "n_verify": len(split.verify),
                "n_test": len(split.test), **fitted}

    def discover(self, state: SessionState) -> dict:
        """Search rule sets on the search split. After each iteration the best set so far and the spent budgets go
        to rules.json and progress.json; run again after a crash, the search goes on from there."""
        cfg, folder, task = self.config, Path(state["session_dir"]), state["task"]
        rules_path, progress_path = folder / RULES, folder / PROGRESS
        part = self._part(state, "search")
        fallback = self._fallback(state, "search")
        reward = Reward(part.engine, part.gold, fallback, task=task)
        labels = read_json(Path(state["gold_path"]))["labels"]
        table = self._table(state)

        def report_fn(rules: RuleSet) -> ErrorReport:
            return build_error_report(task, rules, part.engine, table, part.gold, fallback, labels, seed=cfg.seed)

        done = {"iterations": 0, "tokens": 0, "elapsed": 0.0, "initial_reward": reward(RuleSet()),
                "best_reward": reward(RuleSet()), "finished": False, "stop_reason": None}
        initial = RuleSet()
        if progress_path.exists() and rules_path.exists():
            done = read_json(progress_path)
            initial = RuleSet.load(rules_path)
            logger.info("session %s: resuming the search after %d iterations", state["session_id"],
                        done["iterations"])
        left_iterations = cfg.iterations - done["iterations"]
        left_seconds = None if cfg.budget_seconds is None else cfg.budget_seconds - done["elapsed"]
        left_tokens = None if cfg.budget_tokens is None else cfg.budget_tokens - done["tokens"]
        spent = (left_iterations <= 0 or (left_seconds is not None and left_seconds <= 0)
                 or (left_tokens is not None and left_tokens <= 0))
        if not done["finished"] and not spent:
            done = self._search(state, initial, done, reward, report_fn, left_iterations, left_seconds, left_tokens)
        elif not done["finished"]:
            done = {**done, "finished": True, "stop_reason": done.get("stop_reason") or "resumed_spent"}
            write_json(progress_path, done)
        if not rules_path.exists():
            save_rules(initial, rules_path)
        rules = RuleSet.load(rules_path)
        return {"rules_path": str(rules_path), "iterations": done["iterations"],
                "initial_reward": done["initial_reward"], "best_reward": done["best_reward"],
                "tokens": done["tokens"], "n_rules": len(rules), "stop_reason": done["stop_reason"]}

    def _search(self, state: SessionState, initial: RuleSet, done: dict, reward: Reward, report_fn: Any,
                iterations: int, seconds: float | None, tokens: int | None) -> dict:
        cfg, folder = self.config, Path(state["session_dir"])
        best = {"reward": done["best_reward"]}
        proposer = TracedProposer(self._proposer(state), TraceLog(folder / EVENTS), state["session_id"],
                                  lambda: best["reward"])
        # A resumed search draws other seeds than the first run did from that point on.
        search_config = SearchConfig(iterations=iterations, budget_seconds=seconds, budget_tokens=tokens, k=cfg.k,
                                     seed=cfg.seed + done["iterations"])

        def checkpoint(progress: SearchProgress) -> None:
            step = progress.step
            best["reward"] = max(best["reward"], step.best_reward)
            save_rules(progress.best_rules, folder / RULES)  # the rules first: progress.json vouches for them
            now = {**done, "iterations": done["iterations"] + step.iteration, "tokens": done["tokens"] + step.tokens,
                   "elapsed": done["elapsed"] + step.elapsed_seconds, "best_reward": best["reward"]}
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
        (folder / SEARCH).write_text(result.model_dump_json(indent=1), encoding="utf-8")
        if result.best_reward >= best["reward"]:
            save_rules(result.best_rules, folder / RULES)
        final = {**done, "iterations": done["iterations"] + result.iterations,
                 "tokens": done["tokens"] + result.tokens, "elapsed": done["elapsed"] + result.timings.total,
                 "best_reward": max(best["reward"], result.best_reward), "finished": True,
                 "stop_reason": result.stop_reason}
        write_json(folder / PROGRESS, final)
        return final

    def verify(self, state: SessionState) -> dict:
        """Check every rule of the best set on the verify split; keep those that hold there."""
        cfg, folder = self.config, Path(state["session_dir"])
        part = self._part(state, "verify")
        rules = RuleSet.load(state["rules_path"]).for_task(state["task"])
        verifier = Verifier(VerifierConfig(min_support=cfg.min_support, min_precision_lower=cfg.min_precision_lower,
                                           seed=cfg.seed))
        verdict = verifier.check(rules, part.engine, part.gold, split="verify",
                                 fallback={state["task"]: self._fallback_label(state)})
        (folder / VERDICT).write_text(verdict.model_dump_json(indent=1), encoding="utf-8")
        accepted = [v.rule_id for v in verdict.rules if v.accepted and v.stats.precision >= cfg.min_precision]
        return {"verdict_path": str(folder / VERDICT), "accepted": accepted}

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

    def evaluate(self, state: SessionState) -> dict:
        """On the sealed test split: the accepted rules alone, the decider (or the majority label) alone, and the
        two together (a rule that fires decides; elsewhere the decider does)."""
        cfg, folder = self.config, Path(state["session_dir"])
        part = self._part(state, "test")
        verdict = Verdict.model_validate_json(Path(state["verdict_path"]).read_text(encoding="utf-8"))
        confidence = {v.rule_id: v.stats.precision_lower for v in verdict.rules}
        rules = [r for r in RuleSet.load(state["rules_path"]) if r.id in set(state["accepted"])]
        prediction = part.engine.predict(rules, [confidence[r.id] for r in rules])
        rule_pred = list(prediction.labels)
        base = self._fallback(state, "test")
        together = with_fallback(rule_pred, base)
        boot = paired_bootstrap(part.gold, together, base, seed=cfg.seed)
        name = "features decider" if (folder / DECIDER_PREDICTIONS).is_file() else "majority label"
        evaluation = {"split": "test", "n": len(part.gold), "fallback_name": name,
                      "rules": score(part.gold, rule_pred).model_dump(),
                      "fallback": score(part.gold, base).model_dump(),
                      "rules_with_fallback": score(part.gold, together).model_dump(),
                      "bootstrap": boot.model_dump()}
        write_json(folder / EVALUATION, evaluation)
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
            "verify": {"rules": len(verdict.rules), "accepted": len(accepted),
                       "min_precision": self.config.min_precision},
            "accepted_rules": accepted,
            "committed": state.get("committed", []),
            "test": read_json(folder / EVALUATION),
            "costs": {"author_calls": sum(1 for e in events if e.agent == "author"),
                      "tokens": sum(e.tokens for e in events if e.agent == "author"),
                      "author_seconds": sum(e.seconds for e in events if e.agent == "author")},
        }
        write_json(folder / REPORT, report)
        return {"report_path": str(folder / REPORT)}
