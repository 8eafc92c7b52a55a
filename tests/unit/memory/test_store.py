"""The rule memory with real Chroma and the real multilingual embedder, in temporary folders."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from _memory_rules import TASK, rule, stats
from filelock import FileLock

from kdsl.data import load_dataset
from kdsl.memory import MemoryStoreError, RuleMemory
from kdsl.rules import Rule, RuleSet
from kdsl.tools.features import SampleFeatures, dialogue_fields

MDSIRC = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "www2025-mdsirc"


def test_round_trip_is_exact(memory):
    written = Rule(
        label="是否会生锈", task=TASK,
        when={"and": [{"field": "user_text", "any_of": ["生锈", "锈"]},
                      {"not": {"field": "agent_text", "regex": "不会.{0,4}生锈"}}]},
        statement="用户担心商品会不会生锈，意图是是否会生锈",
        origin={"author": "smollm2-360m", "session": "sess-1", "node": "n7"},
        status="accepted", stats=stats(12, 11),
    )
    result = memory.add(written)
    assert result.action == "inserted" and result.rule_id == written.id
    assert memory.get(written.id) == written
    record = memory.record(written.id)
    assert record.document == written.statement + "\n" + written.when.render()
    assert record.sessions == ("sess-1",) and record.duplicate_of is None
    assert written.id in memory and len(memory) == 1
    with pytest.raises(MemoryStoreError, match="no rule 'r-missing'"):
        memory.get("r-missing")


def test_equivalent_condition_merges_and_pools_statistics(memory):
    first = rule("商品材质", ["不锈钢", "Material"], "用户询问材质", origin={"session": "s1"}, stats=stats(10, 9))
    # Same condition: other term order, other case, full-width letters; a later session measured it again.
    twin = rule("商品材质", ["ｍａｔｅｒｉａｌ", "不锈钢"], "问材质", origin={"session": "s2"}, status="accepted",
                stats=stats(20, 18))
    assert first.when.key == twin.when.key and first.id == twin.id
    memory.add(first)
    merged = memory.add(twin)
    assert merged.action == "merged" and merged.rule_id == first.id and len(memory) == 1
    kept = memory.get(first.id)
    assert kept.statement == "用户询问材质" and kept.when == first.when  # the stored rule's words are kept
    assert kept.status == "accepted"  # accepted by either, accepted
    assert (kept.stats.support, kept.stats.correct, kept.stats.n) == (30, 27, 120)
    assert memory.record(first.id).sessions == ("s1", "s2")

    # The same session measuring again refreshes its entry instead of counting twice.
    again = memory.add(rule("商品材质", ["不锈钢", "material"], origin={"session": "s2"}, stats=stats(25, 24)))
    assert again.action == "merged" and again.rule.stats.support == 35
    assert len(memory.list()) == 1

    # A different label with the same condition is a different rule.
    assert memory.add(rule("是否会生锈", ["不锈钢", "material"])).action == "inserted"


def test_near_duplicate_statement_links_to_the_better_rule(memory):
    base = rule("商品材质", ["材质"], "用户询问商品的材质，例如是否为不锈钢，则意图是商品材质", stats=stats(10, 9))
    memory.add(base)

    worse = rule("商品材质", ["材料"], "用户问商品是什么材料做的，比如是不是不锈钢，意图为商品材质", stats=stats(10, 6))
    linked = memory.add(worse)
    assert linked.action == "linked" and linked.linked_to == base.id and linked.better_id == base.id
    assert linked.similarity >= memory.near_duplicate
    assert memory.record(worse.id).duplicate_of == base.id and memory.record(base.id).duplicate_of is None

    better = rule("商品材质", ["什么材质"], "用户询问商品的材质，比如是否为不锈钢，意图是商品材质", status="accepted",
                  stats=stats(30, 30))
    result = memory.add(better)
    assert result.action == "linked" and result.better_id == better.id
    assert memory.record(result.linked_to).duplicate_of == better.id

    # Another question about the same label, and the same words for another label, are not duplicates.
    assert memory.add(rule("商品材质", ["316"], "用户说内胆是316还是304不锈钢，属于商品材质")).action == "inserted"
    assert memory.add(rule("是否会生锈", ["材质"], base.statement)).action == "inserted"
    assert len(memory) == 5


def test_update_retires_the_old_version_and_keeps_lineage(memory):
    v1 = rule("何时上货", ["没货"], "用户说没货了", status="accepted", origin={"session": "s1"}, stats=stats(8, 7))
    memory.add(v1)
    # Only the statement changes: the new version cannot reuse the id and carries the measurements over.
    second = memory.update(v1.model_copy(update={"statement": "用户说商品没货，问何时上货"}))
    assert second.action == "updated" and second.replaces == v1.id and second.rule_id == f"{v1.id}.v2"
    v2 = memory.get(second.rule_id)
    assert v2.version == 2 and v2.origin.parent == v1.id and v2.stats == v1.stats
    assert memory.get(v1.id).status == "retired" and memory.record(v1.id).superseded_by == v2.id

    # A refinement with a new condition names the rule it replaces.
    refined = rule("何时上货", ["没货", "补货"], "用户问没货的商品何时补货", status="accepted")
    third = memory.update(refined, replaces=v2.id)
    assert third.rule_id == refined.id and memory.get(refined.id).version == 3

    expected = [v1.id, v2.id, refined.id]
    assert [r.id for r in memory.lineage(v1.id)] == expected
    assert [r.id for r in memory.lineage(refined.id)] == expected
    assert [r.status for r in memory.lineage(v2.id)] == ["retired", "retired", "accepted"]
    assert [r.id for r in memory.list(label="何时上货")] == [refined.id]  # live versions only
    assert len(memory.list(label="何时上货", status=None)) == 3
    with pytest.raises(MemoryStoreError, match=f"update its newer version '{refined.id}'"):
        memory.update(v1.model_copy(update={"statement": "again"}), replaces=v2.id)

    retired = memory.retire(refined.id)
    assert retired.status == "retired" and memory.list(label="何时上货") == []


def test_filters(memory):
    memory.add(rule("商品材质", ["材质"], "问材质", status="accepted", stats=stats(20, 19)))
    memory.add(rule("商品材质", ["金属"], "问是不是金属", stats=stats(5, 3)))
    memory.add(rule("是否会生锈", ["生锈"], "问会不会生锈", status="accepted", stats=stats(8, 8)))
    memory.add(rule("何时上货", ["补货"], "问补货"))  # no statistics
    memory.add(rule("dog", ["dog"], "an image of a dog", task="image_scene", field="image_labels",
                    status="accepted", stats=stats(4, 4)))

    def labels(**filters) -> list[str]:
        return [r.label for r in memory.list(**filters)]

    assert len(memory.list()) == 5
    assert set(labels(task=TASK)) == {"商品材质", "是否会生锈", "何时上货"}
    assert labels(task=TASK, label="商品材质") == ["商品材质", "商品材质"]
    assert sorted(labels(status="accepted")) == sorted(["商品材质", "是否会生锈", "dog"])
    assert labels(task=TASK, status="candidate") == ["商品材质", "何时上货"]  # most confident first
    assert sorted(labels(min_precision=0.9)) == sorted(["商品材质", "是否会生锈", "dog"])
    assert labels(task=TASK, min_precision=0.9, min_support=10) == ["商品材质"]
    assert labels(task="image_scene", min_support=5) == []
    hits = memory.search("会生锈吗", k=3, status="accepted", task=TASK)
    assert {h.rule.status for h in hits} == {"accepted"} and {h.rule.task for h in hits} == {TASK}


def test_semantic_search_finds_a_chinese_rule_from_a_paraphrase(memory):
    rules = [
        rule("商品材质", ["材质", "不锈钢"], "用户询问商品是用什么材质做的"),
        rule("是否会生锈", ["生锈"], "用户担心商品用久了会不会生锈"),
        rule("何时上货", ["补货", "没货"], "用户问缺货的商品什么时候补货"),
        rule("发货数量", ["几支", "两支"], "用户确认一单发几件商品"),
        rule("适用季节", ["夏天", "冬天"], "用户问商品适合什么季节使用"),
    ]
    for r in rules:
        memory.add(r)
    # Not "这个东西卖完了，啥时候能再到货？": e5-small scores it 0.8758 for both 何时上货 and 是否会生锈, a tie that
    # the CPU's float rounding broke either way on different machines.
    hits = memory.search("现在缺货，什么时候能再有货？", k=3)
    assert hits[0].rule.label == "何时上货"
    assert hits[0].score > hits[-1].score and len(hits) == 3
    assert memory.search("这个杯子是什么材料的", k=1)[0].rule.label == "商品材质"
    assert len(memory.search("材料", k=50)) == 5  # k above the number of rules returns them all


def test_fire_on_real_mdsirc_dialogue(memory):
    if not MDSIRC.exists():
        pytest.skip(f"real data not found at {MDSIRC}")
    dataset = load_dataset(MDSIRC)
    sample = next(s for s in dataset.samples if s.task == TASK and "316不锈钢" in dialogue_fields(s)["user_text"])
    features = SampleFeatures(sample_id=sample.id, **dialogue_fields(sample))

    fires = rule(sample.label, ["316不锈钢", "金属材质"], "用户问不锈钢型号", status="accepted", stats=stats(6, 6))
    weaker = rule(sample.label, ["内胆"], "用户问内胆", status="accepted", stats=stats(6, 4))
    memory.add(fires)
    memory.add(weaker)
    memory.add(rule(sample.label, ["不锈钢"], "候选规则", status="candidate"))  # not accepted
    memory.add(rule("何时上货", ["补货"], "问补货", status="accepted"))  # does not match
    memory.add(rule(sample.label, ["不锈钢"], "another task", task="image_scene", status="accepted"))
    fired = memory.fire_on(features, TASK)
    assert [r.id for r in fired] == [fires.id, weaker.id]  # most confident first
    assert memory.fire_on(features, "no_such_task") == []


def test_export_then_import_round_trips_and_deduplicates(memory, tmp_path, embedder):
    memory.add(rule("商品材质", ["材质"], "问材质", status="accepted", stats=stats(20, 19)))
    memory.add(rule("是否会生锈", ["生锈"], "问会不会生锈"))
    v1 = rule("何时上货", ["补货"], "问补货")
    memory.add(v1)
    memory.update(v1.model_copy(update={"statement": "问何时补货"}))

    path = memory.export(tmp_path / "rules.json", status=None)
    exported = RuleSet.load(path)
    assert len(exported) == 4
    with RuleMemory(tmp_path / "other", embedder) as other:
        results = other.import_(path)
        assert [r.action for r in results] == ["inserted"] * 4
        assert {r.id: r for r in other.list(status=None)} == {r.id: r for r in exported}
        assert [r.id for r in other.lineage(v1.id)] == [v1.id, f"{v1.id}.v2"]
        again = other.import_(path)
        assert {r.action for r in again} == {"merged"} and len(other) == 4


def test_a_held_lock_makes_writers_wait_then_fail(tmp_path, embedder):
    mem = RuleMemory(tmp_path / "memory", embedder, lock_timeout=0.3)
    holder = FileLock(str(mem.lock_path))
    acquired, release = threading.Event(), threading.Event()

    def hold() -> None:
        with holder:
            acquired.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    acquired.wait(10)
    try:
        with pytest.raises(MemoryStoreError, match="stayed locked"):
            mem.add(rule("商品材质", ["材质"]))
    finally:
        release.set()
        thread.join()
    assert mem.add(rule("商品材质", ["材质"])).action == "inserted"
    mem.close()


def test_arguments_are_checked(tmp_path, embedder):
    with pytest.raises(ValueError, match="near_duplicate"):
        RuleMemory(tmp_path, embedder, near_duplicate=1.5)
    with pytest.raises(ValueError, match="lock_timeout"):
        RuleMemory(tmp_path, embedder, lock_timeout=0)
    with RuleMemory(tmp_path / "m", embedder) as mem, pytest.raises(ValueError, match="k must be"):
        mem.search("x", k=0)
