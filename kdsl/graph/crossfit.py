"""Cross-fitting: which fold proposed which candidate, the held-out counts the verifier pools, the ladder of bars,
and the nested estimate (candidates found without folds k and j, verified on the inner folds, applied to k)."""

from __future__ import annotations

import logging

import numpy as np

from kdsl.agents.verifier import Verifier, VerifierConfig
from kdsl.graph.config import SessionConfig
from kdsl.graph.context import SessionContext
from kdsl.graph.discover import fold_atoms, inner_candidates
from kdsl.graph.state import SessionState
from kdsl.rules import Rule, RuleSet, atoms
from kdsl.rules.analysis import RuleAnalysis
from kdsl.search import (
    rule_key,
)

logger = logging.getLogger(__name__)


def held_out_fires(ctx: SessionContext, state: SessionState, rules: RuleSet) -> np.ndarray:
    """(search samples, rules): the rule fires on the sample and was proposed by the search of the sample's
    fold, i.e. by a search that never saw the sample. Pooled over folds, these are the verifier's counts."""
    part = ctx.part(state, "search")
    folds = ctx.decider(state)["folds"]
    fold_of = np.array([folds[i] for i in part.ids])
    proposed = fold_atoms(ctx, state)
    mask = np.array([[rule_key(r) in proposed.get(int(f), set()) for r in rules] for f in fold_of], dtype=bool)
    mask = mask.reshape(len(part.ids), len(rules))
    return part.engine.fire_matrix(list(rules)) & mask


def ladder(cfg: SessionConfig) -> list[VerifierConfig]:
    """The verifier's bars, loosest first: the session's own, then stricter steps that `verify` climbs until
    the accepted set's nested estimate of precision reaches the session's target. Starting loose and stopping at
    the first step that reaches the target keeps every rule that precision allows: on MDSIRC dialogue the nested
    estimate at precision 0.75 was as high as at 0.9 (0.80-0.89 in five seeded sessions), at 0.16-0.24 coverage
    instead of 0.10-0.19."""
    own = VerifierConfig(min_support=cfg.min_support, min_precision_lower=cfg.min_precision_lower,
                         min_precision=cfg.min_precision, seed=cfg.seed)
    if cfg.target_precision is None:
        return [own]
    steps = [own]
    for support, lower, precision in ((3, 0.4, 0.8), (3, 0.4, 0.85), (3, 0.4, 0.9), (4, 0.5, 0.9), (5, 0.5, 0.95),
                                      (6, 0.6, 0.95)):
        step = own.model_copy(update={"min_support": max(own.min_support, support),
                                      "min_precision_lower": max(own.min_precision_lower, lower),
                                      "min_precision": max(own.min_precision, precision)})
        if step != steps[-1]:
            steps.append(step)
    return steps


def nested(ctx: SessionContext, state: SessionState, bars: VerifierConfig) -> list[list[Rule]]:
    """For each search sample of fold k, the rules it would meet as unseen test data of a session run without
    fold k: candidates found without fold k (and an inner fold j, see `inner_candidates`), verified on the
    inner folds, pooled, accepted by the same bars, carrying the statistics counted there. Estimates and the
    arbiter's weight made from these are honest: nothing about fold k's labels chose or counted its rules
    (the decider's out-of-fold predictions the searches read are the one exception, a weak one)."""
    part = ctx.part(state, "search")
    folds = ctx.decider(state)["folds"]
    fold_of = np.array([folds[i] for i in part.ids])
    ks = ctx.folds(state)
    verifier = Verifier(bars)
    out: list[list[Rule]] = [[] for _ in part.ids]
    for k in ks:
        candidates: dict[str, Rule] = {}
        proposed: dict[str, set[int]] = {}
        for j in ks:
            if j == k:
                continue
            for rule in inner_candidates(ctx, state, k, j, len(ks)):
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
