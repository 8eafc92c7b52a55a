"""`kdsl discover --resume` on a session whose checkpoint file is damaged: one line, exit 2, files left alone."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from kdsl.cli.main import app
from kdsl.config import Settings


def test_a_damaged_checkpoint_file_is_one_line_and_left_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("KDSL_HOME", str(tmp_path / "home"))
    folder = Settings().sessions_dir / "s1"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"session_id": "s1", "config": {
        "data": str(tmp_path / "data.jsonl"), "task": "intent", "iterations": 5}}), encoding="utf-8")
    damaged = b"not a database, a disk error's leftovers " * 80
    (folder / "checkpoints.sqlite").write_bytes(damaged)
    got = CliRunner().invoke(app, ["discover", "--resume", "s1"])
    assert got.exit_code == 2, got.output
    assert got.output.startswith("error: session s1: a file of the session") and "file is not a database" in got.output
    assert len(got.output.strip().splitlines()) == 1 and "Traceback" not in got.output
    assert (folder / "checkpoints.sqlite").read_bytes() == damaged
