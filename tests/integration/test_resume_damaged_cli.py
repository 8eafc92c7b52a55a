"""`kdsl discover --resume` on a session whose checkpoint file is damaged: one line, exit 2, files left alone."""

from __future__ import annotations

import json
import sqlite3

from typer.testing import CliRunner

from kdsl.cli.main import app
from kdsl.config import Settings
from kdsl.graph import SessionConfig, run_session


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


def test_a_damaged_progress_file_is_named_and_the_checkpoints_are_left_alone(tmp_path, monkeypatch, banking77_slice):
    data = banking77_slice(4, 10)
    monkeypatch.setenv("KDSL_HOME", str(tmp_path / "home"))
    settings = Settings()
    paused = run_session(SessionConfig(data=data, task="intent", author="ngram", iterations=4, images=False,
                                       review=True, decider="majority"), settings)
    assert paused.paused  # at the review: a session that resumes runs its graph again
    progress = paused.session_dir / "progress.json"
    progress.write_text('{"broken": ', encoding="utf-8")

    def checkpoint_rows() -> list:
        with sqlite3.connect(paused.session_dir / "checkpoints.sqlite") as db:
            return [db.execute(f"SELECT * FROM {t}").fetchall() for t in ("checkpoints", "writes")]

    before = checkpoint_rows()
    got = CliRunner().invoke(app, ["discover", "--resume", paused.session_id])
    assert got.exit_code == 2, got.output
    assert got.output.startswith(f"error: {progress}: cannot be read (JSONDecodeError"), got.output
    assert f"session {paused.session_id} cannot resume" in got.output
    assert len(got.output.strip().splitlines()) == 1 and "Traceback" not in got.output
    assert checkpoint_rows() == before and progress.read_text(encoding="utf-8") == '{"broken": '
