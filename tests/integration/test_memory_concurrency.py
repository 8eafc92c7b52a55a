"""Two processes writing to one rule memory at once lose nothing and corrupt nothing (real Chroma, real embedder)."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

from kdsl.memory import RuleMemory, document_text
from kdsl.rules import Rule, RuleStats
from kdsl.tools.cache import FeatureCache
from kdsl.tools.embeddings import TextEmbedder

N = 20
TASK = "dialogue_intent"


def _stats(support: int) -> RuleStats:
    return RuleStats(n=100, support=support, correct=support, coverage=support / 100, precision=1.0, recall=0.5,
                     precision_lower=0.5, overlaps=0, conflicts=0)


def rules_of(tag: str) -> list[Rule]:
    """One writer's distinct rules, each its own label, so none merges or links."""
    return [Rule(label=f"intent-{tag}-{i}", task=TASK, when={"field": "user_text", "any_of": [f"{tag}词{i}"]},
                 statement=f"writer {tag} rule {i}", origin={"session": tag}, status="accepted", stats=_stats(i + 1))
            for i in range(N)]


def shared(tag: str, i: int) -> Rule:
    """The rule both writers measure again after each of their own writes (a read-modify-write of one document)."""
    return Rule(label="shared", task=TASK, when={"field": "user_text", "any_of": ["共享"]}, statement="both writers",
                origin={"session": tag}, stats=_stats(i + 1))


def _write(path: str, cache: str, tag: str, barrier) -> None:
    memory = RuleMemory(Path(path), TextEmbedder(FeatureCache(Path(cache))), lock_timeout=60)
    barrier.wait(60)  # start writing together
    for i, rule in enumerate(rules_of(tag)):
        memory.add(rule)
        memory.add(shared(tag, i))
    memory.close()


def test_two_processes_write_at_once(tmp_path):
    path, cache = tmp_path / "memory", tmp_path / "features.sqlite"
    embedder = TextEmbedder(FeatureCache(cache))
    written = {r.id: r for tag in "ab" for r in rules_of(tag)}
    # Warm the shared embedding cache, so the writers spend their time writing, and so interleave densely.
    embedder.embed(sorted({document_text(r) for r in [*written.values(), shared("a", 0)]}), kind="passage")
    # A reader that has already searched, before the writers start: its index must catch up with their writes.
    memory = RuleMemory(path, embedder)
    own = Rule(label="reader", task=TASK, when={"any_of": ["读者"]}, statement="the reader's own rule")
    memory.add(own)
    assert [h.rule.id for h in memory.search(own.statement)] == [own.id]

    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    writers = [ctx.Process(target=_write, args=(str(path), str(cache), tag, barrier)) for tag in "ab"]
    for w in writers:
        w.start()
    for w in writers:
        w.join(120)
    assert [w.exitcode for w in writers] == [0, 0]

    assert len(memory) == 2 * N + 2
    for rule_id, rule in written.items():
        assert memory.get(rule_id) == rule, rule_id
    merged = memory.record(shared("a", 0).id)
    # Each writer's last measurement survives: no write read a stale document and overwrote the other's.
    assert merged.sessions == ("a", "b") and merged.rule.stats.support == 2 * N

    hits = memory.search(document_text(rules_of("b")[3]), k=2 * N + 2)
    assert len(hits) == 2 * N + 2 and hits[0].rule.id == rules_of("b")[3].id
    memory.close()
