"""The README's five-minute quick start runs as written: its commands, taken from the README, on a slice of the same
Banking77 files (a few intents) and a free port."""

from __future__ import annotations

import csv
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INTENTS = ("card_arrival", "lost_or_stolen_card", "exchange_rate", "top_up_failed", "pin_blocked")

pytestmark = pytest.mark.slow


def quick_start() -> str:
    """The first bash block under the README's quick-start heading."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Five minutes on your own data"):]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


def _slice(source: Path, target: Path) -> Path:
    with source.open(encoding="utf-8", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["category"] in INTENTS]
    with target.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["text", "category"])
        writer.writeheader()
        writer.writerows(rows)
    return target


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_quick_start_runs_as_written(banking77_path: Path, tmp_path: Path):
    script = quick_start()
    data = "../shared/data/banking77/"
    assert f"{data}train.csv" in script and f"{data}test.csv" in script and "--port 8000" in script
    port = _free_port()
    script = (script.replace(f"{data}train.csv", str(_slice(banking77_path / "train.csv", tmp_path / "train.csv")))
              .replace(f"{data}test.csv", str(_slice(banking77_path / "test.csv", tmp_path / "test.csv")))
              .replace("8000", str(port)))
    # The server the script starts in the background is stopped however the script ends.
    wrapped = f"set -e\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n{script}"
    env = {**os.environ, "KDSL_HOME": str(tmp_path / "home"), "PATH": f"{Path(sys.executable).parent}:"
           f"{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-c", wrapped], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    reply = json.loads(done.stdout.strip().splitlines()[-1])
    decision = reply["decisions"][0] if "decisions" in reply else reply
    assert decision["label"] in INTENTS
    assert decision["label"] == "card_arrival"  # "my card still has not arrived"
    assert "together" in done.stdout and "baseline" in done.stdout  # the scoreboard was printed
