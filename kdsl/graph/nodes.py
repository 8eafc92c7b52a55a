"""The session graph's nodes. Each reads the files its state names, writes its own files into the session folder,
and returns a partial state update; heavy things (features, engines, the model) stay in memory, not in the state."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from langgraph.types import interrupt

from kdsl import __version__
from kdsl.agents.arbiter import Arbiter, ArbiterConfig
from kdsl.agents.baseline import char_tfidf_lr
from kdsl.agents.verifier import RuleVerdict, TaskVerdict, Verdict, Verifier
from kdsl.data import SplitConfig, k_shot, load_dataset, split_dataset, stratified_folds, with_test_file
from kdsl.data.splits import Split
from kdsl.graph.context import SessionContext
from kdsl.graph.crossfit import held_out_fires, ladder, nested
from kdsl.graph.discover import discover, fold_atoms
from kdsl.graph.layout import (
    ARBITER,
    COMMITTED,
    DECIDER_DIR,
    DECIDER_PREDICTIONS,
    EVALUATION,
    EVENTS,
    FEATURES,
    GOLD,
    REPORT,
    SPLIT,
    TEST_PREDICTIONS,
    VERDICT,
    read_json,
    write_json,
)
from kdsl.graph.state import SessionState
from kdsl.rules import Rule, RuleSet, find_oos_label, out_of_scope_scores, paired_bootstrap, score
from kdsl.rules.analysis import RuleAnalysis
from kdsl.search import (
    rule_key,
)
from kdsl.tools.features import FeatureTable
from kdsl.traces import TraceEvent, TraceLog
from kdsl.traces.events import truncate

logger = logging.getLogger(__name__)


def traced(name: str, fn: Callable[[SessionState], dict]) -> Callable[[SessionState], dict]:
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


def fit_decider(ctx: SessionContext, dataset: Any, split: Split, table: FeatureTable, folder: Path) -> dict:
    """Fit the session's decider on the search split, with cross-fitting: the folds its own cross-validation
    used are the folds the rules are searched and verified over, so no rule search reads a decider probability
    from a model that saw the sample, and no rule is verified on a sample its search saw. The features decider
    is kept in the session folder (deployable); `majority` is each fold's label frequencies."""
    cfg = ctx.config
    search = [dataset.get(i) for i in split.search if dataset.get(i).label is not None]
    labels = list(dataset.label_spaces[cfg.task])
    test = [dataset.get(i) for i in split.test]
    record: dict[str, Any] = {"decider": cfg.decider, "labels": labels}
    if cfg.decider == "features":
        from kdsl.agents.decider_kinds import default_encoders
        from kdsl.agents.feature_decider import FeatureDecider, FeatureDeciderConfig

        decider = FeatureDecider(FeatureDeciderConfig(seed=cfg.seed, folds=cfg.folds),
                                 default_encoders(ctx.settings, images=cfg.images), name=f"session-{folder.name}")
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


def prepare(ctx: SessionContext, state: SessionState) -> dict:
    """Load the task's data, split it (search / verify / test) and featurize it, into the session folder."""
    cfg, folder = ctx.config, Path(state["session_dir"])
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
    table = default_builder(ctx.settings, images=cfg.images, progress=False).build(
        [s for s in dataset.samples if s.id in used])
    table.save(folder / FEATURES)
    write_json(folder / GOLD, {"task": cfg.task, "labels": list(dataset.label_spaces[cfg.task]),
                               "gold": {s.id: s.label for s in dataset.samples}})
    fitted = fit_decider(ctx, dataset, split, table, folder)
    return {"split_path": str(folder / SPLIT), "features_path": str(folder / FEATURES),
            "gold_path": str(folder / GOLD), "n_search": len(split.search), "n_verify": len(split.verify),
            "n_test": len(split.test), **fitted}


def verify(ctx: SessionContext, state: SessionState) -> dict:
    """Cross-fitted verification: each rule is scored on the folds whose search proposed it without seeing them,
    the counts pooled over folds (no samples are set aside for a verify split). A rule is kept when the pooled
    support, precision lower bound and precision pass the bars; its pooled precision is its estimate. The
    accepted set's precision and coverage are estimated one level further out (see `nested`); with a target
    precision, the bars are tightened step by step (`ladder`) until that estimate reaches it."""
    cfg, folder, task = ctx.config, Path(state["session_dir"]), state["task"]
    part = ctx.part(state, "search")
    rules = RuleSet.load(state["rules_path"]).for_task(task)
    rule_list = list(rules)
    labels, conf = ctx.fallback(state, "search")
    tried = []
    for bars in ladder(ctx.config):
        met_by_sample = nested(ctx, state, bars)
        best = [max(met, key=lambda r: r.confidence) if met else None for met in met_by_sample]
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
    fired = held_out_fires(ctx, state, rules)
    stats = RuleAnalysis(fired, [r.label for r in rule_list], part.gold,
                         faults=[part.engine.fault_counts.get(r.id, 0) for r in rule_list]).stats()
    proposed = fold_atoms(ctx, state)
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
                                         fallback_name=ctx.decider_name(state),
                                         fallback=score(part.gold, labels),
                                         rules_with_fallback=score(part.gold, together), bootstrap=boot),))
    (folder / VERDICT).write_text(verdict.model_dump_json(indent=1), encoding="utf-8")
    return {"verdict_path": str(folder / VERDICT), "accepted": [rule_list[i].id for i in accepted]}


def review(ctx: SessionContext, state: SessionState) -> dict:
    """Pause for a person: the resume value is the list of the rule ids they keep."""
    verdict = Verdict.model_validate_json(Path(state["verdict_path"]).read_text(encoding="utf-8"))
    shown = [{"id": v.rule_id, "label": v.label, "statement": v.statement, "condition": v.condition,
              "precision": v.stats.precision, "support": v.stats.support}
             for v in verdict.rules if v.rule_id in state["accepted"]]
    kept = interrupt({"session": state["session_id"], "rules": shown})
    kept_ids = set(kept or [])
    return {"accepted": [i for i in state["accepted"] if i in kept_ids], "reviewed": True}


def commit(ctx: SessionContext, state: SessionState) -> dict:
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
    with RuleMemory.open(ctx.config.memory, settings=ctx.settings) as memory:
        for rule_id in state["accepted"]:
            rule = by_id[rule_id]
            rule = rule.model_copy(update={
                "status": "accepted", "stats": stats[rule_id],
                "origin": rule.origin.model_copy(update={"session": state["session_id"]})})
            committed.append(memory.add(rule).rule_id)
    write_json(folder / COMMITTED, committed)
    return {"committed": committed}


def accepted_rules(state: SessionState) -> list[Rule]:
    """The accepted rules, carrying their cross-fitted statistics (what ranks and weighs them)."""
    verdict = Verdict.model_validate_json(Path(state["verdict_path"]).read_text(encoding="utf-8"))
    stats = {v.rule_id: v.stats for v in verdict.rules}
    kept = set(state["accepted"])
    return [r.model_copy(update={"stats": stats[r.id]}) for r in RuleSet.load(state["rules_path"])
            if r.id in kept]


def arbiter(ctx: SessionContext, state: SessionState) -> dict:
    """Fit the arbiter on cross-fitted data: each search sample's out-of-fold decider distribution and the
    accepted rules it would meet as unseen data (`nested`), so the weight it learns is the one that holds on
    samples neither side was fitted on."""
    folder = Path(state["session_dir"])
    part = ctx.part(state, "search")
    rules = accepted_rules(state)
    bars = Verdict.model_validate_json(Path(state["verdict_path"]).read_text(encoding="utf-8")).config
    on_sample = nested(ctx, state, bars)
    arbiter = Arbiter(ArbiterConfig(policy="stacked"))
    dists = ctx.distributions(state, "search", part.ids)
    weights = dict(arbiter.fit(dists, on_sample, part.gold).weights_)
    # What the rules are expected to add, on the same cross-fitted data (the weight is one number per task
    # chosen over a short grid, so reusing these samples for the estimate flatters it little).
    together = [d.label for d in arbiter.decide_all(dists, on_sample)]
    alone = [d.best for d in dists]
    boot = paired_bootstrap(part.gold, together, alone, seed=ctx.config.seed)
    estimated = {"decider": score(part.gold, alone).weighted_f1, "together": score(part.gold, together).weighted_f1,
                 "delta": boot.delta, "delta_low": boot.low, "delta_high": boot.high,
                 "changed": sum(a != b for a, b in zip(together, alone, strict=True)),
                 "fixed": sum(a != b and a == g for a, b, g in zip(together, alone, part.gold, strict=True)),
                 "broken": sum(a != b and b == g for a, b, g in zip(together, alone, part.gold, strict=True))}
    # Do no harm: rules change the decider's decisions only where the cross-fitted data shows the pair better
    # than the decider alone (paired 95% CI above 0). Otherwise the rules still fire and explain; the decider decides.
    gated = ctx.config.gain_check and boot.low <= 0 and any(w > 0 for w in weights.values())
    if gated:
        weights = {task: 0.0 for task in weights}
    estimated["gated"] = gated
    write_json(folder / ARBITER, {"policy": "stacked", "weights": weights, "estimated": estimated})
    if (folder / DECIDER_DIR).is_dir():  # the session is a deployable model: serve / predict / eval --session
        from kdsl.agents.collaboration import ArbiterState, Collaboration

        Collaboration(rules=RuleSet(rules=tuple(rules)), arbiters={
            "together:stacked": ArbiterState(config=ArbiterConfig(policy="stacked"), weights=weights),
            "together:rules_first": ArbiterState(config=ArbiterConfig(policy="rules_first")),
            "together:decider_first": ArbiterState(config=ArbiterConfig(policy="decider_first")),
        }).save(folder / DECIDER_DIR)
    return {"arbiter_weights": weights, "arbiter_estimate": estimated}


def evaluate(ctx: SessionContext, state: SessionState) -> dict:
    """On the sealed test split: the accepted rules alone, the decider alone, and the two together under the
    fitted arbiter; each rule's estimated (cross-fitted) precision beside the precision realized here."""
    cfg, folder = ctx.config, Path(state["session_dir"])
    part = ctx.part(state, "test")
    rules = accepted_rules(state)
    fired = part.engine.fire_matrix(rules)
    prediction = part.engine.predict(rules, [r.confidence for r in rules], fired=fired)
    rule_pred = list(prediction.labels)
    dists = ctx.distributions(state, "test", part.ids)
    base = [d.best for d in dists]
    weights = read_json(folder / ARBITER)["weights"] if (folder / ARBITER).exists() else {}
    arbiter = Arbiter(ArbiterConfig(policy="stacked"), weights)
    decisions = arbiter.decide_all(dists, part.engine.fired(rules))
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
    search, table = ctx.part(state, "search"), ctx.table(state)
    baseline = char_tfidf_lr([table[i].all_text for i in search.ids], search.gold,
                             [table[i].all_text for i in part.ids])
    evaluation = {"split": "test", "n": len(part.gold), "fallback_name": ctx.decider_name(state),
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


def report(ctx: SessionContext, state: SessionState) -> dict:
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
        "config": ctx.config.model_dump(mode="json"),
        "data": {"split": state["split_path"], "search": state["n_search"], "verify": state["n_verify"],
                 "test": state["n_test"]},
        "search": {"iterations": state["iterations"], "initial_reward": state["initial_reward"],
                   "best_reward": state["best_reward"], "tokens": state["tokens"], "rules": state["n_rules"],
                   "stop_reason": state["stop_reason"]},
        "verify": {"rules": len(verdict.rules), "accepted": len(accepted), "split": verdict.split,
                   "min_precision": ctx.config.min_precision},
        "decider": {"name": ctx.decider_name(state), "cv_accuracy": state.get("decider_cv_accuracy"),
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


NODES = {"prepare": prepare, "discover": discover, "verify": verify, "review": review, "commit": commit,
         "arbiter": arbiter, "evaluate": evaluate, "report": report}
