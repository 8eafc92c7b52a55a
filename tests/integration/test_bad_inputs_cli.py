"""Hostile but fair inputs to the CLI: each is a one-line error with exit code 2, never a traceback, and leaves
nothing half-written behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kdsl.cli.main import app

LINES = [{"id": f"s{i}", "task": "intent", "turns": [{"role": "user", "text": text}], "label": label}
         for i, (text, label) in enumerate([("how old must I be", "age_limit"), ("activate my card", "activate"),
                                            ("age limit please", "age_limit"), ("card activation", "activate")])]


def rule(rid: str, label: str = "age_limit", when: dict | None = None) -> dict:
    return {"id": rid, "label": label, "task": "intent", "statement": "s",
            "when": when or {"field": "user_text", "any_of": ["age"]}}


def nested(levels: int) -> str:
    when = '{"field": "user_text", "any_of": ["a"]}'
    for _ in range(levels):
        when = '{"all_of": [' + when + "]}"
    return '{"rules": [{"id": "deep", "label": "age_limit", "task": "intent", "statement": "s", "when": ' + when + "}]}"


FILES: dict[str, bytes] = {
    "data.jsonl": "\n".join(json.dumps(x) for x in LINES).encode(),
    "dup.json": json.dumps({"rules": [rule("r1"), rule("r1", "activate")]}).encode(),
    "latin1.json": json.dumps({"rules": [rule("r1")]}).encode().replace(b'"s"', b'"\xe9"'),
    "deep.json": nested(5000).encode(),
    "unknown-label.json": json.dumps({"rules": [rule("r1"), rule("r2", "no_such_label")]}).encode(),
    "a-file": b"not a folder",
    "huge.json": json.dumps({"rules": [rule(f"r{i}", when={"field": "user_text", "any_of": [
        f"t{i}-{j}" for j in range(32)]}) for i in range(700)]}).encode(),
}

CASES = [
    (["rules", "check", "dup.json", "--data", "data.jsonl", "--no-images"], "rule #1 (r1): the id of rule #0 again"),
    (["rules", "import", "dup.json", "--memory", "mem"], "rule ids must be unique"),
    (["rules", "check", "latin1.json", "--data", "data.jsonl", "--no-images"], "latin1.json: not UTF-8 text"),
    (["rules", "check", "deep.json", "--data", "data.jsonl", "--no-images"], "deep.json: nested too deeply"),
    (["rules", "check", "huge.json", "--data", "data.jsonl", "--no-images"],
     "huge.json: 22400 terms in all; a rules file holds at most 20000"),
    (["rules", "check", "unknown-label.json", "--data", "data.jsonl", "--no-images"],
     "label 'no_such_label' is not in task 'intent''s label space (2 labels: age_limit, activate)"),
    (["rules", "check", "dup.json", "--data", "data.jsonl", "--min-precision", "5"],
     "--min-precision: Input should be less than or equal to 1"),
    (["rules", "search", " ", "--memory", "mem"], "TEXT is empty"),
    (["rules", "search", "x", "-k", "0", "--memory", "mem"], "Input should be greater than or equal to 1"),
    (["rules", "explain", "UNKNOWN_ID", "--data", "data.jsonl", "--memory", "mem"], "no sample 'UNKNOWN_ID'"),
    (["rules", "list", "--memory", "a-file"], "a-file: is a file; the rule memory is a folder"),
    (["data", "split", "data.jsonl", "--search", "-1"], "--search: Input should be greater than or equal to 0"),
    (["data", "split", "data.jsonl", "--k-shot", "0"], "--k-shot: Input should be greater than or equal to 1"),
    (["serve", "--decider", "x", "--read-timeout", "0"], "--read-timeout: Input should be greater than 0"),
]


@pytest.mark.parametrize(("args", "message"), CASES, ids=[" ".join(a[:2]) + f" {i}" for i, (a, _) in
                                                             enumerate(CASES)])
def test_bad_input_is_one_error_with_exit_code_2(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    for name, content in FILES.items():
        Path(name).write_bytes(content)
    got = CliRunner().invoke(app, args)
    assert got.exit_code == 2, got.output
    assert "Traceback" not in got.output and "errors.pydantic.dev" not in got.output
    assert message in " ".join(got.output.replace("│", " ").split()), got.output
    if got.output.startswith("error: "):
        assert len(got.output.strip().splitlines()) == 1, got.output
    assert not Path("split.json").exists() and not Path("runs").exists()  # nothing written


def test_a_cut_short_image_names_the_flag_that_skips_it_and_the_skip_is_counted(mdsirc_path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    items = json.loads((mdsirc_path / "train.json").read_text(encoding="utf-8"))
    items = [x for x in items if x["image"]][:3]
    (tmp_path / "d" / "images").mkdir(parents=True)
    for item in items:
        for name in item["image"]:
            (tmp_path / "d" / "images" / name).write_bytes((mdsirc_path / "images" / name).read_bytes())
    (tmp_path / "d" / "train.json").write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    cut = tmp_path / "d" / "images" / items[1]["image"][0]
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    runner = CliRunner()

    got = runner.invoke(app, ["features", "build", "--data", "d", "--no-images", "--out", "f.jsonl"])
    assert got.exit_code == 2, got.output
    assert "cut short" in got.output and "(--skip-invalid skips such items and counts them)" in got.output
    assert len(got.output.strip().splitlines()) == 1 and not Path("f.jsonl").exists()

    got = runner.invoke(app, ["features", "build", "--data", "d", "--no-images", "--out", "f.jsonl", "--skip-invalid"])
    assert got.exit_code == 0, got.output
    assert f"skipped invalid items: corrupt_image: 1 (samples {items[1]['id']})" in " ".join(got.output.split())
    assert len(Path("f.jsonl").read_text(encoding="utf-8").splitlines()) == 2


def test_rules_import_with_data_refuses_a_label_the_task_lacks(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name, content in FILES.items():
        Path(name).write_bytes(content)
    got = CliRunner().invoke(app, ["rules", "import", "unknown-label.json", "--data", "data.jsonl", "--memory", "mem"])
    assert got.exit_code == 2, got.output
    assert "rule #1" in got.output and "label 'no_such_label' is not in task 'intent''s label space" in got.output
    assert not Path("mem").exists()  # nothing stored
    got = CliRunner().invoke(app, ["rules", "import", "unknown-label.json", "--memory", "mem"])
    assert got.exit_code == 0 and "were not checked against any data" in got.output, got.output
