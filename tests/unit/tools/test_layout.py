"""Layout fields: the title band and bottom bar of a screenshot, from OCR boxes, and rules over them."""

from __future__ import annotations

from kdsl.rules import Rule, RuleEngine, parse_rule
from kdsl.tools.features import SampleFeatures
from kdsl.tools.layout import layout_of
from kdsl.tools.ocr import OcrLine

W, H = 1080, 2400


def line(text: str, top: float) -> OcrLine:
    y = top * H
    return OcrLine(text=text, score=0.99, box=(100.0, y, 500.0, y + 60))


def test_title_and_bottom_bands_come_from_where_the_lines_are():
    lines = [line("16:40 5G", 0.01), line("退款详情", 0.06), line("请寄回商品", 0.5), line("联系卖家", 0.93)]
    layout = layout_of(lines, W, H)
    assert layout.title == "16:40 5G\n退款详情"
    assert layout.bottom == "联系卖家"
    assert layout.lines == 4 and 0 < layout.text_area < 0.1
    assert layout_of([], W, H).title == "" and layout_of(lines, 0, 0).lines == 0


def test_a_rule_over_the_title_tells_refund_from_return_pages():
    # The body of both pages talks about sending goods back; only the title says which page it is.
    refund = SampleFeatures(sample_id="a", image_text="退款详情\n请寄回商品", image_title="退款详情")
    returns = SampleFeatures(sample_id="b", image_text="退货退款详情\n请寄回商品", image_title="退货退款详情")
    body = SampleFeatures(sample_id="c", image_text="页面正文\n退款详情见下", image_title="我的订单")
    rule = parse_rule({"label": "退款页面", "task": "image_scene", "statement": "The title is a refund page's.",
                       "when": {"and": [{"field": "image_title", "any_of": ["退款详情"]},
                                        {"not": {"field": "image_title", "any_of": ["退货"]}}]}})
    assert isinstance(rule, Rule)
    engine = RuleEngine([refund, returns, body], ["image_scene"] * 3)
    assert [bool(row[0]) for row in engine.fire_matrix([rule])] == [True, False, False]
