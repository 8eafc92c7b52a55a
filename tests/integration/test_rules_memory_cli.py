"""check --commit fills the rule memory; list, search, show, explain, retire, export and import read it back."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from kdsl.cli.main import app

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "rules"
runner = CliRunner()


def invoke(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def test_commit_then_query_the_memory(mdsirc, mdsirc_path, tmp_path):
    memory = str(tmp_path / "memory")
    out = invoke("rules", "check", str(EXAMPLES / "mdsirc_dialogue_intent.json"), "--data", str(mdsirc_path),
                 "--no-images", "--commit", "--memory", memory, "--out", str(tmp_path / "check.json"))
    verdict = json.loads((tmp_path / "check.json").read_text(encoding="utf-8"))
    accepted = [r["rule_id"] for r in verdict["rules"] if r["accepted"]]
    assert 0 < len(accepted) < len(verdict["rules"]) and f"{len(accepted)} accepted rule(s) written" in out

    listed = json.loads(invoke("rules", "list", "--memory", memory, "--json"))
    assert sorted(r["id"] for r in listed) == sorted(accepted)
    assert all(r["status"] == "accepted" and r["stats"]["support"] >= 3 for r in listed)

    hits = json.loads(invoke("rules", "search", "这盏灯可以调节亮度吗", "-k", "1", "--memory", memory, "--json"))
    assert hits[0]["rule"]["label"] == "能否调光"

    sample = next(s for s in mdsirc.samples if s.label == "能否调光" and "亮度" in "".join(t.text for t in s.turns))
    explained = invoke("rules", "explain", sample.id, "--data", str(mdsirc_path), "--memory", memory)
    assert "能否调光 by" in explained and "matched: user_text contains any of" in explained

    rule_id = hits[0]["rule"]["id"]
    assert json.loads(invoke("rules", "show", rule_id, "--memory", memory).split("\nlineage")[0])["rule"]["id"] == rule_id
    invoke("rules", "retire", rule_id, "--memory", memory)
    assert rule_id not in [r["id"] for r in json.loads(invoke("rules", "list", "--memory", memory, "--json"))]
    assert "no accepted rule fires" in invoke("rules", "explain", sample.id, "--data", str(mdsirc_path),
                                              "--memory", memory)

    exported = tmp_path / "export.json"
    invoke("rules", "export", str(exported), "--memory", memory)
    assert len(json.loads(exported.read_text(encoding="utf-8"))["rules"]) == len(accepted) - 1
    again = invoke("rules", "import", str(exported), "--memory", memory)
    assert f"merged {len(accepted) - 1}" in again  # equivalent rules merge instead of piling up
    assert len(json.loads(invoke("rules", "list", "--memory", memory, "--json"))) == len(accepted) - 1
