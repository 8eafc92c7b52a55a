"""The rule author: real SmolLM2 through llama.cpp on the real MDSIRC dialogue task, and the repair path on
recorded bad output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kdsl.agents.authors.llm import AuthorConfig, RuleAuthor, extract_items, parse_edits
from kdsl.agents.authors.prompt import edit_schema, render_prompt
from kdsl.agents.verifier import majority_fallback
from kdsl.data import load_dataset
from kdsl.rules import Rule, RuleEngine, RuleSet, parse_rule
from kdsl.rules.edits import apply_edit
from kdsl.search.proposer import build_error_report
from kdsl.tools.features import FIELDS, SampleFeatures, dialogue_fields

DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "www2025-mdsirc"
TASK = "dialogue_intent"
SMOLLM2 = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def dialogue():
    if not DATA.exists():
        pytest.skip(f"real data not found at {DATA}")
    ds = load_dataset(DATA).for_task(TASK)
    feats = {s.id: SampleFeatures(sample_id=s.id, **dialogue_fields(s)) for s in ds.samples}
    engine = RuleEngine([feats[s.id] for s in ds.samples], [s.task for s in ds.samples])
    gold = [s.label for s in ds.samples]
    majority = majority_fallback(gold, [s.task for s in ds.samples])[TASK]
    report = build_error_report(TASK, RuleSet(), engine, feats, gold, [majority] * len(gold), ds.label_spaces[TASK],
                                max_examples=6, seed=0)
    return ds, engine, report


@pytest.fixture(scope="module")
def smollm2_llama(pack_settings):
    pytest.importorskip("llama_cpp")
    from kdsl.models.llama_cpp import LlamaCppBackend

    with LlamaCppBackend(SMOLLM2, pack_settings, n_ctx=4096) as backend:
        yield backend


@pytest.mark.slow
def test_smollm2_proposes_valid_edits_on_real_dialogues(dialogue, smollm2_llama):
    ds, engine, report = dialogue
    author = RuleAuthor(smollm2_llama, AuthorConfig(k=3, max_tokens=240, temperature=0.7))
    assert author.name == f"author:{SMOLLM2}"
    user = author.messages(RuleSet(), report, 4)[1].content
    assert "标签" in user and report.labels[0] in user and report.uncovered[0].label in user

    kept = 0
    for seed in (0, 1):
        proposal = author.propose(RuleSet(), report, 3, seed=seed)
        assert proposal.prompt_tokens > 0 and proposal.completion_tokens > 0 and proposal.seconds > 0
        assert all(isinstance(n, int) and n > 0 for n in proposal.invalid.values())
        parse = author.last_parse_
        assert parse is not None and parse.proposed == len(proposal.edits) + sum(
            v for k, v in proposal.invalid.items() if k not in ("not_json", "truncated"))
        assert len(proposal.edits) <= 3
        rules = RuleSet()
        for edit in proposal.edits:
            assert edit.op == "add"  # nothing to refine or drop in an empty set
            rule = edit.rule
            assert rule is not None and rule.task == TASK and rule.label in ds.label_spaces[TASK]
            assert rule.origin.author == SMOLLM2 and rule.origin.session is None and rule.origin.node is None
            again = parse_rule(json.loads(rule.model_dump_json(by_alias=True)))  # the rule round-trips
            assert again.id == rule.id
            rules = apply_edit(rules, edit)
            engine.fires(rule)  # compiles and applies without error
        assert len(rules) == len(proposal.edits)  # distinct rules
        kept += len(proposal.edits)
    # The grammar keeps the JSON valid: SmolLM2 writes at least one usable rule across two calls.
    assert kept >= 1


def test_schema_enumerates_labels_fields_and_targets(dialogue):
    _, _, report = dialogue
    schema = edit_schema(report.labels, ["user_text", "all_text"], [], 3)
    edits = schema["properties"]["edits"]
    assert edits["minItems"] == edits["maxItems"] == 3
    props = edits["items"]["properties"]
    assert props["op"]["enum"] == ["add"] and "target" not in props
    assert props["label"]["enum"] == list(report.labels)
    assert props["field"]["enum"] == ["user_text", "all_text"]
    with_rules = edit_schema(report.labels, FIELDS, ["r-1"], 2)["properties"]["edits"]["items"]
    assert with_rules["properties"]["op"]["enum"] == ["add", "refine", "drop"]
    assert "target" in with_rules["required"]


def test_prompt_is_compact_and_in_the_datasets_language(dialogue):
    _, _, report = dialogue
    system, user = render_prompt(report, RuleSet(), 8, language="zh", max_examples=6, max_field_chars=120)
    assert "JSON" in system and "规则" in system and len(user) < 3000
    _, english = render_prompt(report, RuleSet(), 8, language="en", max_examples=2, max_field_chars=40)
    assert "Labels:" in english and "[2]" in english and "[3]" not in english  # max_examples holds
    assert "[6]" in user and "[7]" not in user
    with pytest.raises(ValueError, match="language"):
        AuthorConfig(language="fr")


# --- the repair / validation path on recorded bad output --------------------------------------------------------

LABELS = ("适用季节", "单品推荐", "用法用量")


@pytest.fixture
def small_report(dialogue):
    _, _, report = dialogue
    return report.model_copy(update={"labels": LABELS})


def _existing() -> RuleSet:
    rule = Rule(label="适用季节", task=TASK, when={"field": "user_text", "any_of": ["冬天"]})
    return RuleSet(rules=(rule,))


def _parse(text, report, rules=None, k=8):
    return parse_edits(text, report, rules or RuleSet(), k, author="recorded", fields=("user_text", "last_user_text", "all_text"))


def test_broken_json_is_counted_and_complete_edits_survive(small_report):
    assert _parse("I think the rules are: none", small_report).invalid == {"not_json": 1}
    cut = '{"edits": [{"op": "add", "label": "适用季节", "field": "user_text", "any_of": ["冬天", "夏天"]}, ' \
          '{"op": "add", "label": "单品推荐", "field": "user_text", "any_of": ["推荐'
    out = parse_edits(cut, small_report, RuleSet(), 8, author="recorded", truncated=True)
    assert out.invalid == {"truncated": 1} and out.repaired.get("lenient_json") == 1
    [edit] = out.edits
    assert edit.rule.label == "适用季节" and edit.rule.when.any_of == ("冬天", "夏天")
    fenced = '好的：\n```json\n{"edits": [{"op": "add", "label": "用法用量", "any_of": ["怎么用"]}]}\n```'
    [edit] = _parse(fenced, small_report).edits
    assert edit.rule.when.field == "all_text"  # a missing field is repaired to all_text


def test_each_bad_edit_is_dropped_with_its_reason(small_report):
    items = [
        {"op": "add", "label": "适用季节", "field": "shop_name", "any_of": ["冬天"]},          # unknown field
        {"op": "add", "label": "退款", "field": "user_text", "any_of": ["退款"]},              # label outside
        {"op": "add", "label": "单品推荐", "field": "user_text", "any_of": ["", "  ", "..."]},  # empty terms
        {"op": "add", "label": "单品推荐", "field": "user_text", "any_of": [], "regex": "(?<=买)哪个"},  # bad regex
        {"op": "add", "label": "用法用量", "field": "user_text", "any_of": ["用法用量"]},       # label copied as term
        {"op": "merge", "label": "用法用量", "field": "user_text", "any_of": ["几次"]},         # unknown op
        {"op": "drop", "target": "r-nothere"},                                                # unknown target
        "add a rule for 冬天",                                                               # not an object
        {"op": "add", "field": "user_text", "any_of": ["几次"]},                               # no label
        {"op": "add", "label": "用法用量", "field": "user_text", "any_of": ["x" * 80]},        # over-long term
    ]
    out = _parse(json.dumps({"edits": items}, ensure_ascii=False), small_report)
    assert out.edits == ()
    assert out.invalid == {"unknown_field": 1, "unknown_label": 1, "empty_condition": 3, "bad_regex": 1,
                           "unknown_op": 1, "unknown_target": 1, "not_an_object": 1, "missing_label": 1}
    assert out.repaired["regex_dropped"] == 1 and out.repaired["term_is_label"] == 1
    assert out.proposed == len(items)


def test_repairs_keep_what_can_be_kept(small_report):
    rules = _existing()
    [existing] = rules.rules
    items = [
        # spaces, quotes and duplicates trimmed; field alias; label with stray spaces; a bad regex dropped, the
        # terms kept; exclusion terms become AND NOT
        {"op": "ADD", "label": " 单品推荐 ", "field": "user", "any_of": [" 推荐 ", "“推荐”", "哪款好"],
         "regex": "([", "not_any_of": ["套装"], "statement": "  问 推荐  哪款  "},
        {"op": "refine", "target": "r-unknown", "label": "用法用量", "field": "user_text", "any_of": "一天几次，怎么用"},
        {"op": "refine", "target": existing.id, "label": "适用季节", "field": "user_text",
         "any_of": ["冬天", "冬季"]},
        {"op": "refine", "target": existing.id, "label": "适用季节", "field": "user_text", "any_of": ["冬天"]},
        {"op": "add", "label": "适用季节", "field": "user_text", "any_of": ["冬天"]},          # already in the set
        {"op": "drop", "target": existing.id[:8]},                                          # a unique id prefix
        {"op": "add", "label": "用法用量", "field": "last_user_text", "all_of": ["怎么", "用"]},
    ]
    out = _parse(json.dumps(items, ensure_ascii=False), small_report, rules, k=4)
    assert out.invalid == {"no_change": 1, "duplicate": 1, "surplus": 1}
    first, refine_as_add, refine, drop = out.edits
    assert first.op == "add" and first.rule.label == "单品推荐" and first.rule.statement == "问 推荐 哪款"
    assert first.rule.when.model_dump(by_alias=True) == {"and": (
        {"field": "user_text", "any_of": ("推荐", "哪款好")},
        {"not": {"field": "user_text", "any_of": ("套装",)}})}
    assert refine_as_add.op == "add" and refine_as_add.rule.when.any_of == ("一天几次", "怎么用")
    assert refine.op == "refine" and refine.target == existing.id and refine.rule.origin.parent == existing.id
    assert drop.op == "drop" and drop.target == existing.id
    assert out.repaired["refine_to_add"] == 1 and out.repaired["regex_dropped"] == 1
    assert out.repaired["terms_from_string"] == 1 and out.repaired["field"] == 1 and out.repaired["label"] == 1
    for edit in out.edits:
        new = apply_edit(rules, edit)
        assert new != rules


def test_lenient_extraction_reads_bare_objects_and_lists():
    items, complete = extract_items('[{"label": "a"}]')
    assert items == [{"label": "a"}] and complete
    items, complete = extract_items('edit 1: {"label": "a"} edit 2: {"label": "b", "any_of": ["x"]} and {broken')
    assert [i["label"] for i in items] == ["a", "b"] and not complete


class _TextOnly:
    """A backend without schema support that replies with recorded prose-wrapped JSON (the transformers path)."""

    supports_schema = False

    def __init__(self, text):
        from kdsl.models import ModelInfo

        self.text, self.calls = text, []
        self.info = ModelInfo(backend="recorded", model="recorded-model")

    def generate(self, messages, images=None, schema=None, max_tokens=256, temperature=0.0, seed=0):
        from kdsl.models import Generation

        self.calls.append(schema)
        return Generation(text=self.text, prompt_tokens=10, completion_tokens=5, seconds=0.01, finish_reason="stop")


def test_backend_without_schema_gets_the_format_in_words(small_report):
    backend = _TextOnly('Sure! {"edits": [{"op": "add", "label": "用法用量", "field": "user_text", '
                        '"any_of": ["几次"]}, {"op": "add", "label": "火星", "any_of": ["x"]}]}')
    author = RuleAuthor(backend, AuthorConfig(k=2))  # type: ignore[arg-type]
    proposal = author.propose(RuleSet(), small_report, seed=3)
    assert backend.calls == [None]
    assert "<关键词>" in author.last_prompt_[1].content  # the JSON shape, spelled out
    assert [e.rule.label for e in proposal.edits] == ["用法用量"]
    assert proposal.invalid == {"unknown_label": 1} and proposal.edits[0].rule.origin.author == "recorded-model"
    assert (proposal.prompt_tokens, proposal.completion_tokens) == (10, 5)
