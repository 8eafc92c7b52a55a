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
    """Distinct rules of one writer (each its own label, so none merges or links), plus one rule both write."""
    own = [Rule(label=f"intent-{tag}-{i}", task=TASK, when={"field": "user_text", "any_of": [f"{tag}词{i}"]},
                statement=f"writer {tag} rule {i}", origin={"session": tag}, status="accepted", stats=_stats(i + 1))
           for i in range(N)]
    shared = Rule(label="shared", task=TASK, when={"field": "user_text", "any_of": ["共享"]},
                  statement="both writers", origin={"session": tag}, stats=_stats(5))
    return own[: N // 2] + [shared] + own[N // 2:]


def _write(path: str, cache: str, tag: str, barrier) -> None:
    memory = RuleMemory(Path(path), TextEmbedder(FeatureCache(Path(cache))), lock_timeout=60)
    barrier.wait(60)  # start writing together
    for rule in rules_of(tag):
        memory.add(rule)
    memory.close()


def test_two_processes_write_at_once(tmp_path):
    path, cache = tmp_path / "memory", tmp_path / "features.sqlite"
    embedder = TextEmbedder(FeatureCache(cache))
    memory = RuleMemory(path, embedder)  # opened before the writers: it must see their writes afterwards
    written = {r.id: r for tag in "ab" for r in rules_of(tag)}
    # Warm the shared embedding cache, so the writers spend their time writing, and so interleave densely.
    embedder.embed(sorted({document_text(r) for r in written.values()}), kind="passage")

    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    writers = [ctx.Process(target=_write, args=(str(path), str(cache), tag, barrier)) for tag in "ab"]
    for w in writers:
        w.start()
    for w in writers:
        w.join(120)
    assert [w.exitcode for w in writers] == [0, 0]

    assert len(memory) == 2 * N + 1
    shared = written.pop(rules_of("a")[N // 2].id)
    for rule_id, rule in written.items():
        assert memory.get(rule_id) == rule, rule_id
    merged = memory.record(shared.id)
    assert merged.sessions == ("a", "b") and merged.rule.stats.support == 10  # neither measurement was lost

    # The reader's vector index caught up with the other processes' writes: every document is searchable.
    hits = memory.search(document_text(rules_of("b")[3]), k=2 * N + 1, status=None)
    assert len(hits) == 2 * N + 1 and hits[0].rule.id == rules_of("b")[3].id
    memory.close()
