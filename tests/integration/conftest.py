"""Fixtures shared by the discovery-session tests."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from kdsl.config import Settings


@pytest.fixture
def home(tmp_path, monkeypatch, mdsirc_path) -> Settings:
    """A fresh KDSL_HOME for sessions on the real MDSIRC data (skipped when the data is absent)."""
    monkeypatch.setenv("KDSL_HOME", str(tmp_path / "home"))
    return Settings()


@pytest.fixture
def banking77_slice(banking77_path: Path, tmp_path: Path) -> Callable[[int, int], Path]:
    """A CSV of the first `per_label` training queries of the first `labels` Banking77 intents (a small session)."""

    def make(labels: int, per_label: int) -> Path:
        rows = list(csv.DictReader((banking77_path / "train.csv").open(encoding="utf-8")))
        chosen = sorted({r["category"] for r in rows})[:labels]
        data = tmp_path / f"banking77-{labels}x{per_label}.csv"
        with data.open("w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["text", "category"])
            writer.writeheader()
            for label in chosen:
                writer.writerows([r for r in rows if r["category"] == label][:per_label])
        return data

    return make


@pytest.fixture
def kill_in_search(home) -> Callable[..., Path]:
    """Run `kdsl discover ARGS` in a subprocess and kill -9 it once its search has run `iterations` iterations;
    returns the session folder (the kill must come before the search ends: give a long budget)."""

    def run(args: list[str], iterations: int = 20) -> Path:
        code = "import sys; from kdsl.cli.discover_cmd import app; sys.argv[0] = 'kdsl-discover'; app()"
        proc = subprocess.Popen([sys.executable, "-c", code, *args], env={**os.environ, "KDSL_HOME": str(home.home)},
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            found = list(home.sessions_dir.glob("*/progress.json")) if home.sessions_dir.exists() else []
            try:
                progress = json.loads(found[0].read_text()) if found else None
            except ValueError:  # caught mid-write
                progress = None
            if progress and progress["iterations"] >= iterations:
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"the session ended before the kill: {proc.stderr.read().decode()[-2000:]}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        [folder] = list(home.sessions_dir.iterdir())
        assert not (folder / "verdict.json").exists()  # killed in the search
        return folder

    return run
