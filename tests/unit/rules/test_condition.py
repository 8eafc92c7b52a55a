"""The condition language: parsing, refusal of bad input, normalisation, canonical keys, the regex guard."""

from __future__ import annotations

import time

import pytest

from kdsl.errors import RuleSyntaxError
from kdsl.rules import Rule, RuleSet, normalize, parse_rule


def rule(when, label="退款页面", task="image_scene", **kw):
    return parse_rule({"label": label, "task": task, "when": when, **kw})


def fields(**kw):
    base = dict.fromkeys(["user_text", "last_user_text", "agent_text", "image_text", "image_labels", "all_text"], "")
    return {**base, **{k: normalize(v) for k, v in kw.items()}}


def test_every_operator_evaluates():
    f = fields(image_text="申请退款\n退款金额 ¥12", user_text="Hello ＷＯＲＬＤ")
    assert rule({"field": "image_text", "any_of": ["退货", "退款"]}).when.matches(f)
    assert not rule({"field": "image_text", "all_of": ["退货", "退款"]}).when.matches(f)
    assert rule({"field": "user_text", "all_of": ["hello", "world"]}).when.matches(f)  # case and width folded
    assert rule({"field": "image_text", "regex": r"退款金额\s*¥\d+"}).when.matches(f)
    assert rule({"not": {"field": "image_text", "any_of": ["购物车"]}}).when.matches(f)
    assert rule({"and": [{"field": "image_text", "any_of": ["退款"]}, {"field": "user_text", "any_of": ["hi"]}]}
                ).when.matches(f) is False
    assert rule({"or": [{"field": "image_text", "any_of": ["购物车"]}, {"field": "user_text", "any_of": ["hello"]}]}
                ).when.matches(f)


def test_json_round_trip_uses_operator_names(tmp_path):
    r = rule({"and": [{"field": "image_text", "any_of": ["退款"]}, {"not": {"regex": "退货"}}]}, statement="s")
    dumped = r.model_dump(mode="json", by_alias=True)
    assert set(dumped["when"]) == {"and"} and set(dumped["when"]["and"][1]) == {"not"}
    assert Rule.model_validate(dumped) == r
    path = RuleSet(rules=(r,)).save(tmp_path / "rules.json")
    assert RuleSet.load(path).rules == (r,)


def test_key_ignores_term_order_case_and_width():
    a = rule({"field": "image_text", "any_of": ["退款", "Refund"]})
    b = rule({"field": "image_text", "any_of": ["ＲＥＦＵＮＤ", "退款"]})
    assert a.when.key == b.when.key and a.id == b.id
    assert rule({"field": "user_text", "any_of": ["退款"]}).id != a.id


@pytest.mark.parametrize(
    ("when", "message"),
    [
        ({"field": "image_text"}, "exactly one operator"),
        ({"any_of": ["a"], "regex": "b"}, "exactly one operator"),
        ({"field": "pixels", "any_of": ["a"]}, "Input should be"),
        ({"field": "image_text", "any_of": []}, "at least 1"),
        ({"field": "image_text", "any_of": ["  "]}, "visible character"),
        ({"field": "image_text", "any_of": ["a\nb"]}, "control character"),
        ({"regex": "(a)\\1"}, "unsupported regex"),
        ({"regex": "(?=a)b"}, "unsupported regex"),
        ({"regex": "["}, "invalid or unsupported"),
        ({"regex": "(\\w{100}){100}"}, "invalid or unsupported"),  # too large for the memory bound
        ({"not": {"not": {"not": {"not": {"not": {"any_of": ["a"]}}}}}}, "deeper than"),
        ({"and": [{"any_of": ["a"]}], "extra": 1}, "exactly one operator|Extra inputs"),
    ],
)
def test_bad_conditions_are_refused_with_a_reason(when, message):
    with pytest.raises(RuleSyntaxError, match=message):
        rule(when)


def test_rules_file_errors_name_file_and_rule(tmp_path):
    path = tmp_path / "rules.json"
    path.write_text('{"rules": [{"label": "a", "task": "t", "when": {"any_of": ["x"]}}, '
                    '{"id": "bad-one", "label": "b", "task": "t", "when": {"regex": "(x"}}]}', encoding="utf-8")
    with pytest.raises(RuleSyntaxError, match=r"rules.json: rule #1 \(bad-one\): when.regex.regex"):
        RuleSet.load(path)
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(RuleSyntaxError, match="not valid JSON"):
        RuleSet.load(path)


def test_catastrophic_backtracking_pattern_returns_promptly():
    # (a+)+$ takes exponential time in a backtracking engine on "aaaa...b"; RE2 is linear.
    r = rule({"field": "user_text", "regex": "(a+)+$"})
    text = fields(user_text="a" * 50_000 + "b")
    start = time.perf_counter()
    assert not r.when.matches(text)
    assert time.perf_counter() - start < 1.0
