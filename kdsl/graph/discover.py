"""The discover node: one rule search per cross-fitting fold, checkpointed after every iteration, and the
inner searches of the nested estimate. The candidates a fold contributes: the atoms of its best rule set and
the model-free mined terms."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from kdsl._internal.hashing import digest
from kdsl.agents.authors import NO_AUTHOR, AuthorConfig, AuthorContext, make_author
from kdsl.agents.authors.knowledge import (
    KnowledgeTerms,
    ask_terms,
    asking_key,
    data_language,
    knowledge_rules,
)
from kdsl.agents.authors.mined import label_name_rules, label_terms
from kdsl.graph.context import Part, SessionContext
from kdsl.graph.layout import (
    EVENTS,
    FOLD_RULES,
    FOLD_SEARCH,
    FOLD_TERMS,
    INNER_RULES,
    KNOWLEDGE,
    KNOWLEDGE_CACHE,
    PROGRESS,
    RULES,
    SEARCH,
    read_json,
    save_rules,
    write_json,
)
from kdsl.graph.state import SessionState
from kdsl.rules import Rule, RuleSet, atoms
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
from kdsl.traces import TraceEvent, TraceLog
from kdsl.traces.events import truncate

logger = logging.getLogger(__name__)


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


def share(total: float | None, k: int, folds: int) -> float | None:
    """Fold k's share of a budget (iterations: whole numbers that add up to the total)."""
    if total is None:
        return None
    if isinstance(total, int):
        return total // folds + (1 if k < total % folds else 0)
    return total / folds


def search_seconds(ctx: SessionContext, state: SessionState, k: int, n_folds: int) -> float | None:
    """Fold k's share of the authors' wall-clock budget once the term author's calls are paid (their recorded
    seconds, also when its terms came from the cache), so sessions with and without it spend the same budget."""
    total = ctx.config.budget_seconds
    if total is None:
        return None
    path = Path(state["session_dir"]) / KNOWLEDGE
    asked = KnowledgeTerms.model_validate_json(path.read_text(encoding="utf-8")).seconds if path.exists() else 0.0
    return share(max(total - asked, 0.0), k, n_folds)


def make_proposer(ctx: SessionContext, state: SessionState, part: Part) -> Any:
    """The session's author (`--author`), built for this part's samples."""
    cfg = ctx.config
    return make_author(cfg.author, AuthorContext(
        engine=part.engine, gold=part.gold, fields=ctx.fields(), settings=ctx.settings,
        config=AuthorConfig(k=cfg.k, language=cfg.language, max_tokens=cfg.author_max_tokens)))


def mine(ctx: SessionContext, state: SessionState, part: Part) -> list[Rule]:
    """The candidates no search found: each label's most specific terms on these samples, the terms of the
    labels' own names and, with `--term-author`, the model's terms for those names (the same in every fold:
    they come from no sample)."""
    names = read_json(Path(state["gold_path"]))["labels"]
    texts = {f: part.engine.texts(f) for f in ctx.fields()}
    rules = [*label_terms(texts, part.gold, state["task"], per_label=10, min_support=2, min_lower=0.3),
             *label_name_rules(names, state["task"], ctx.fields())] if ctx.config.mined else []
    found = {r.id: r for r in rules}  # a name's term the samples single out too: once
    for rule in knowledge_rules(knowledge(ctx, state, names, texts), state["task"], ctx.fields()):
        found.setdefault(rule.id, rule)  # a term the samples or the names gave already stays theirs
    return list(found.values())


def knowledge(ctx: SessionContext, state: SessionState, names: list[str],
              texts: dict[str, list[str]]) -> KnowledgeTerms:
    """The term author's terms for each label name, asked once per session and kept in knowledge_terms.json, so
    every fold, the nested estimate and a resumed session read the same candidates. No author: none."""
    cfg, folder = ctx.config, Path(state["session_dir"])
    if cfg.term_author is None:
        return KnowledgeTerms(model="", terms={})
    path = folder / KNOWLEDGE
    if path.exists():
        return KnowledgeTerms.model_validate_json(path.read_text(encoding="utf-8"))
    language = data_language([*names, *(t for column in texts.values() for t in column[:200])])
    # Asked from the names alone at temperature 0, the replies depend on nothing a session varies (seed, split):
    # a second session on the same labels reads them from the cache instead of asking again for minutes.
    cached = ctx.settings.cache_dir / KNOWLEDGE_CACHE / f"{asking_key(cfg.term_author, names, language)}.json"
    found = None
    if cached.exists():
        try:
            found = KnowledgeTerms.model_validate_json(cached.read_text(encoding="utf-8"))
        except ValueError:
            logger.warning("%s: a damaged cache entry of model terms; asking the model again", cached)
    from_cache = found is not None
    if found is None:
        found = _ask(ctx, cfg.term_author, names, language)
        cached.parent.mkdir(parents=True, exist_ok=True)
        write_json(cached, found.model_dump(mode="json"))
    write_json(path, found.model_dump(mode="json"))
    TraceLog(folder / EVENTS).append(TraceEvent(
        session=state["session_id"], node="discover", agent="term-author", model=cfg.term_author,
        prompt_tokens=found.prompt_tokens, completion_tokens=found.completion_tokens, seconds=found.seconds,
        output=truncate(json.dumps({"calls": found.calls, "terms": sum(map(len, found.terms.values())),
                                    "dropped": found.dropped, "cached": from_cache}, ensure_ascii=False))))
    logger.info("session %s: the term author listed %d terms for %d labels in %d calls (%.0f s%s)",
                state["session_id"], sum(map(len, found.terms.values())), len(found.terms), found.calls,
                found.seconds, ", read from the cache" if from_cache else "")
    return found


def _ask(ctx: SessionContext, spec: str, names: list[str], language: str) -> KnowledgeTerms:
    from kdsl.models import load_backend

    backend = load_backend(spec, ctx.settings, **({"n_ctx": 2048} if spec.startswith("llama_cpp:") else {}))
    try:
        return ask_terms(backend, names, language=language, model=spec)
    finally:
        if hasattr(backend, "close"):
            backend.close()


def inner_candidates(ctx: SessionContext, state: SessionState, k: int, j: int, n_folds: int) -> list[Rule]:
    """The candidates a session would find without folds k and j (a search and the mined terms, on the other
    folds): what verification on fold j sees when fold k plays the unseen test (see `nested`). Cached in
    rules.fold<k>-<j>.json; the search gets the same share of the budget as an outer fold's."""
    cfg, folder, task = ctx.config, Path(state["session_dir"]), state["task"]
    path = folder / INNER_RULES.format(k=k, j=j)
    if path.exists():
        return list(RuleSet.load(path))
    part = ctx.part(state, "search", exclude=tuple(sorted((k, j))))
    labels, confidence = ctx.fallback(state, "search", part.ids)
    reward = Reward(part.engine, part.gold, labels, task=task, fallback_confidence=confidence)
    table = ctx.table(state)
    names = read_json(Path(state["gold_path"]))["labels"]

    def report_fn(rules: RuleSet) -> ErrorReport:
        return build_error_report(task, rules, part.engine, table, part.gold, labels, names, seed=cfg.seed)

    iterations = int(share(cfg.iterations, j, n_folds) or 0)
    seconds = search_seconds(ctx, state, j, n_folds)
    if iterations < 1 or cfg.author == NO_AUTHOR or (seconds is not None and seconds <= 0):
        # The outer fold j searched nothing either: its candidates are the mined terms (and the term author's).
        rules = mine(ctx, state, part)
        save_rules(RuleSet(rules=tuple({r.id: r for r in rules}.values())), path)
        return rules
    proposer = TracedProposer(make_proposer(ctx, state, part), TraceLog(folder / EVENTS), state["session_id"],
                              lambda: None)
    config = SearchConfig(iterations=iterations,
                          budget_seconds=seconds,
                          budget_tokens=None if cfg.budget_tokens is None
                          else int(share(cfg.budget_tokens, j, n_folds) or 1),
                          k=cfg.k, seed=cfg.seed + 1000 * k + 100 * j + 7)
    try:
        found = STRATEGIES[cfg.strategy](config).search(RuleSet(), proposer, reward, report_fn).best_rules
    finally:
        backend = getattr(proposer.inner, "backend", None)
        if backend is not None and hasattr(backend, "close"):
            backend.close()
    rules = [*found, *mine(ctx, state, part)]
    save_rules(RuleSet(rules=tuple({r.id: r for r in rules}.values())), path)
    return rules


def search_fold(ctx: SessionContext, state: SessionState, k: int, n_folds: int, done: dict) -> dict:
    cfg, folder, task = ctx.config, Path(state["session_dir"]), state["task"]
    part = ctx.part(state, "search", fold=k, held=False)
    terms_path = folder / FOLD_TERMS.format(k=k)
    if not terms_path.exists():  # each label's most specific terms on the fold's training samples
        save_rules(RuleSet(rules=tuple(mine(ctx, state, part))), terms_path)
    labels, confidence = ctx.fallback(state, "search", part.ids)
    reward = Reward(part.engine, part.gold, labels, task=task, fallback_confidence=confidence)
    table = ctx.table(state)
    rules_path = folder / FOLD_RULES.format(k=k)

    def report_fn(rules: RuleSet) -> ErrorReport:
        return build_error_report(task, rules, part.engine, table, part.gold, labels,
                                  read_json(Path(state["gold_path"]))["labels"], seed=cfg.seed)

    fold = done["folds"].get(str(k)) or {"iterations": 0, "tokens": 0, "elapsed": 0.0,
                                         "initial_reward": reward(RuleSet()),
                                         "best_reward": reward(RuleSet()), "finished": False,
                                         "stop_reason": None}
    initial = RuleSet.load(rules_path) if rules_path.exists() else RuleSet()
    iterations = int(share(cfg.iterations, k, n_folds) or 0) - fold["iterations"]
    seconds = search_seconds(ctx, state, k, n_folds)
    tokens = share(cfg.budget_tokens, k, n_folds)
    seconds = None if seconds is None else seconds - fold["elapsed"]
    tokens = None if tokens is None else int(tokens) - fold["tokens"]
    if (cfg.author == NO_AUTHOR or iterations <= 0 or (seconds is not None and seconds <= 0)
            or (tokens is not None and tokens <= 0)):
        reason = "no search author" if cfg.author == NO_AUTHOR else "budget"
        fold = {**fold, "finished": True, "stop_reason": fold.get("stop_reason") or reason}
        save_rules(initial, rules_path)
        done = {**done, "folds": {**done["folds"], str(k): fold}}
        write_json(folder / PROGRESS, done)
        return done
    best = {"reward": fold["best_reward"]}
    proposer = TracedProposer(make_proposer(ctx, state, part), TraceLog(folder / EVENTS), state["session_id"],
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
        if ctx.on_iteration is not None:
            ctx.on_iteration(progress.model_copy(update={"step": step.model_copy(update={
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


def discover(ctx: SessionContext, state: SessionState) -> dict:
    """Search rule sets once per cross-fitting fold, each on the search samples outside that fold, rewarded by
    how the rules fix the decider's out-of-fold predictions there. The budgets are shared out over the folds.
    After each iteration the fold's best set and the spent budgets go to rules.fold<k>.json and progress.json;
    run again after a crash, the search goes on from there. rules.json: the atoms of the folds' sets."""
    folder = Path(state["session_dir"])
    progress_path = folder / PROGRESS
    folds = ctx.folds(state)
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
        done = search_fold(ctx, state, k, len(folds), done)
    merged = merge_folds(ctx, state)
    rewards = [f["best_reward"] for f in done["folds"].values()]
    initial = [f["initial_reward"] for f in done["folds"].values()]
    reasons = sorted({str(f["stop_reason"]) for f in done["folds"].values()})
    done = {**done, "finished": True, "best_reward": float(np.mean(rewards)),
            "initial_reward": float(np.mean(initial)), "stop_reason": ", ".join(reasons)}
    write_json(progress_path, done)
    return {"rules_path": str(folder / RULES), "iterations": done["iterations"],
            "initial_reward": done["initial_reward"], "best_reward": done["best_reward"],
            "tokens": done["tokens"], "n_rules": len(merged), "stop_reason": done["stop_reason"]}


def fold_rules(ctx: SessionContext, state: SessionState) -> dict[int, list[Rule]]:
    """Fold -> its candidates: the best rule set of its search and its labels' most specific terms."""
    folder = Path(state["session_dir"])
    out: dict[int, list[Rule]] = {}
    for k in ctx.folds(state):
        out[k] = [r for name in (FOLD_RULES, FOLD_TERMS) if (folder / name.format(k=k)).exists()
                  for r in RuleSet.load(folder / name.format(k=k)).for_task(state["task"])]
    return out


def fold_atoms(ctx: SessionContext, state: SessionState) -> dict[int, set[str]]:
    """Fold -> the keys of the atoms (single terms, see `kdsl.rules.atoms`) its search proposed."""
    return {k: {rule_key(a) for r in rules for a in atoms(r)} for k, rules in fold_rules(ctx, state).items()}


def merge_folds(ctx: SessionContext, state: SessionState) -> RuleSet:
    """The candidates: every atom of the folds' rule sets (a term found by several folds once), into
    rules.json. The folds' searches rarely agree on a whole term list, but often on its terms."""
    merged: dict[str, Rule] = {}
    for rules in fold_rules(ctx, state).values():
        for rule in rules:
            for atom in atoms(rule):
                merged.setdefault(rule_key(atom), atom)
    rules = RuleSet(rules=tuple(merged.values()))
    save_rules(rules, Path(state["session_dir"]) / RULES)
    return rules
