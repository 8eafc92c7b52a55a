"""The rule memory on a real `chroma run` server, through HttpClient."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kdsl.cli.main import app
from kdsl.memory import MemoryStoreError, RuleMemory
from kdsl.rules import Rule
from kdsl.tools.embeddings import TextEmbedder


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    chroma = shutil.which("chroma") or str(Path(sys.executable).with_name("chroma"))
    if not Path(chroma).exists():
        pytest.skip("the `chroma` command (from chromadb) is not installed")
    port = _free_port()
    proc = subprocess.Popen([chroma, "run", "--path", str(tmp_path / "server"), "--host", "127.0.0.1",
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("`chroma run` did not start")
                time.sleep(0.2)
        yield port
    finally:
        proc.terminate()
        proc.wait(30)


def test_memory_on_a_chroma_server(server, tmp_path):
    memory = RuleMemory.connect("127.0.0.1", server, embedder=TextEmbedder(), lock_path=tmp_path / "server.lock")
    rule = Rule(label="何时上货", task="dialogue_intent", when={"field": "user_text", "any_of": ["补货"]},
                statement="用户问缺货的商品什么时候补货", status="accepted")
    assert memory.add(rule).action == "inserted"
    assert memory.get(rule.id) == rule
    assert memory.add(rule).action == "merged" and len(memory) == 1
    assert memory.search("卖完了什么时候再到货", k=1)[0].rule.id == rule.id


def test_commands_use_the_server_that_kdsl_memory_url_names(server, tmp_path, monkeypatch):
    monkeypatch.setenv("KDSL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KDSL_MEMORY_URL", f"http://127.0.0.1:{server}")
    rule = Rule(label="何时上货", task="dialogue_intent", when={"field": "user_text", "any_of": ["补货"]},
                statement="用户问缺货的商品什么时候补货", status="accepted")
    with RuleMemory.open(embedder=TextEmbedder()) as memory:
        assert memory.path is None  # on the server, not in a folder
        memory.add(rule)
    listed = CliRunner().invoke(app, ["rules", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    assert rule.id in listed.output
    assert not (tmp_path / "home" / "memory" / "chroma.sqlite3").exists()
    monkeypatch.setenv("KDSL_MEMORY_URL", "ftp://nowhere")
    bad = CliRunner().invoke(app, ["rules", "list"])
    assert bad.exit_code == 2 and "KDSL_MEMORY_URL" in bad.output


def test_unreachable_server_is_a_clear_error():
    with pytest.raises(MemoryStoreError, match="cannot reach the Chroma server"):
        RuleMemory.connect("127.0.0.1", _free_port(), embedder=TextEmbedder())
