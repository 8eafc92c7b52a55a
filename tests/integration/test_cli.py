"""The CLI on the real data: inspect, split, features (twice: the second run is all cache), rules check."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kdsl.cli.main import app
from kdsl.data import k_shot, save_jsonl

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "rules"
runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result


def test_inspect_reports_both_tasks_with_label_counts(mdsirc_path):
    out = json.loads(invoke("data", "inspect", str(mdsirc_path), "--json").stdout)
    assert out["samples"] == 705 and out["images"] == 733
    tasks = {t["task"]: t for t in out["tasks"]}
    assert tasks["dialogue_intent"]["samples"] == 212 and tasks["image_scene"]["samples"] == 493
    assert tasks["image_scene"]["label_counts"]["退款页面"] == 25
    assert sum(tasks["dialogue_intent"]["label_counts"].values()) == 212
    text = invoke("data", "inspect", str(mdsirc_path)).stdout
    assert "dialogue_intent" in text and "适用季节" in text


def test_inspect_counts_clinc_out_of_scope(clinc150_path):
    out = json.loads(invoke("data", "inspect", str(clinc150_path), "--json").stdout)
    assert out["meta_counts"]["oos"]["true"] == 1200
    assert out["tasks"][0]["label_counts"]["oos"] == 1200


def test_errors_are_one_line_with_exit_code_2(tmp_path):
    bad = tmp_path / "train.json"
    bad.write_text("[{", encoding="utf-8")
    result = runner.invoke(app, ["data", "inspect", str(tmp_path)])
    assert result.exit_code == 2
    assert "not valid JSON" in result.output and "Traceback" not in result.output


def test_split_writes_ids(mdsirc_path, tmp_path):
    out = tmp_path / "split.json"
    invoke("data", "split", str(mdsirc_path), "--out", str(out), "--seed", "1")
    split = json.loads(out.read_text(encoding="utf-8"))
    assert len(split["search"]) + len(split["verify"]) + len(split["test"]) == 705


def _fires(cond: dict, fields: dict[str, str]) -> bool:
    """A second, deliberately plain evaluator for the operators the example file uses."""
    def norm(s: str) -> str:
        return unicodedata.normalize("NFKC", s).casefold()
    if "any_of" in cond:
        return any(norm(t) in norm(fields[cond["field"]]) for t in cond["any_of"])
    if "and" in cond:
        return all(_fires(c, fields) for c in cond["and"])
    if "not" in cond:
        return not _fires(cond["not"], fields)
    raise AssertionError(f"operator not covered by this test: {cond}")


@pytest.mark.slow
def test_features_twice_then_rules_check_on_real_screenshots(mdsirc, tmp_path):
    # a stratified slice of the image-scene task: 1 screenshot per class (23 images of OCR)
    ids = k_shot(mdsirc.for_task("image_scene"), 1, seed=0)
    data = save_jsonl(mdsirc.subset(ids), tmp_path / "slice.jsonl")
    table = tmp_path / "features.jsonl"

    first = invoke("features", "build", "--data", str(data), "--out", str(table)).stdout
    assert f"{len(ids)} images: {len(ids)} computed, 0 cached" in first
    second = invoke("features", "build", "--data", str(data), "--out", str(table)).stdout
    assert f"0 computed, {len(ids)} cached, 0 failed; 0 OCR call(s)" in second
    rows = {r["sample_id"]: r for r in map(json.loads, table.read_text(encoding="utf-8").splitlines())}
    assert sum(bool(r["image_text"]) for r in rows.values()) > 0.8 * len(ids)
    assert all(r["image_labels"] for r in rows.values())

    stats_file = tmp_path / "check.json"
    invoke("rules", "check", str(EXAMPLES / "mdsirc_image_scene.json"), "--data", str(data),
           "--out", str(stats_file))
    verdict = json.loads(stats_file.read_text(encoding="utf-8"))
    rules = json.loads((EXAMPLES / "mdsirc_image_scene.json").read_text(encoding="utf-8"))["rules"]
    gold = {i: mdsirc.get(i).label for i in ids}
    hits = {i: [_fires(r["when"], rows[i]) for r in rules] for i in ids}
    for j, (rule, got) in enumerate(zip(rules, verdict["rules"], strict=True)):
        support = sum(h[j] for h in hits.values())
        correct = sum(h[j] and gold[i] == rule["label"] for i, h in hits.items())
        overlaps = sum(h[j] and sum(h) > 1 for h in hits.values())
        conflicts = sum(h[j] and any(h[k] and rules[k]["label"] != rule["label"] for k in range(len(rules)))
                        for h in hits.values())
        s = got["stats"]
        assert (s["n"], s["support"], s["correct"], s["overlaps"], s["conflicts"]) == (
            len(ids), support, correct, overlaps, conflicts), rule["label"]
        assert s["recall"] == pytest.approx(correct / sum(g == rule["label"] for g in gold.values()))
    assert sum(r["stats"]["correct"] for r in verdict["rules"]) >= 4  # the on-screen text rules do find their pages


def test_inspect_skip_invalid_counts_by_reason(mdsirc_path, tmp_path):
    import shutil

    items = json.loads((mdsirc_path / "train.json").read_text(encoding="utf-8"))[:4]
    (tmp_path / "images").mkdir()
    for item in items:
        for name in item["image"]:
            shutil.copy(mdsirc_path / "images" / name, tmp_path / "images" / name)
    (tmp_path / "images" / items[0]["image"][0]).write_bytes(b"garbage")
    items[2]["output"] = "不存在"
    (tmp_path / "train.json").write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")

    refused = runner.invoke(app, ["data", "inspect", str(tmp_path)])
    assert refused.exit_code == 2 and items[0]["id"] in refused.output and "cannot be decoded" in refused.output
    out = json.loads(invoke("data", "inspect", str(tmp_path), "--skip-invalid", "--json").stdout)
    assert out["samples"] == 2 and out["invalid"] == {"corrupt_image": 1, "unknown_label": 1}
