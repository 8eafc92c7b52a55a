"""The CPU decider through every command a user runs: train (the default kind), eval, predict and serve, on real
Banking77 utterances."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest
import uvicorn
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from kdsl.agents.predictor import Predictor
from kdsl.cli.main import app
from kdsl.config import Settings
from kdsl.data import Dataset, k_shot, load_dataset, save_jsonl
from kdsl.serve import ServeLimits, create_app
from kdsl.serve.guard import server_config

INTENTS = 6


@pytest.fixture(scope="module")
def slice_path(banking77_path, tmp_path_factory) -> tuple[Path, Path, Dataset]:
    """Six real intents, 20 training utterances each (a JSONL a user could write), and 30 others to predict."""
    full = load_dataset(banking77_path)
    labels = sorted(full.label_spaces["intent"])[:INTENTS]
    ds = Dataset(name="b77", samples=tuple(s for s in full.samples if s.label in labels),
                 label_spaces={"intent": tuple(labels)})
    train = ds.subset(k_shot(ds, 20, ids=[s.id for s in ds.samples if s.meta["split"] == "train"], seed=0))
    other = ds.subset(k_shot(ds, 5, ids=[s.id for s in ds.samples if s.meta["split"] == "test"], seed=0))
    folder = tmp_path_factory.mktemp("data")
    return save_jsonl(train, folder / "train.jsonl"), save_jsonl(other, folder / "other.jsonl"), other


@pytest.fixture(scope="module")
def trained(slice_path, tmp_path_factory) -> tuple[Path, str]:
    """`kdsl train` (the default kind) on the six intents: the KDSL_HOME holding decider b77, and the output."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KDSL_HOME", str(home))
        got = CliRunner().invoke(app, ["train", "--data", str(slice_path[0]), "--name", "b77"])
    assert got.exit_code == 0, got.output
    return home, got.output


def test_train_eval_predict_serve_with_the_default_kind(slice_path, trained, tmp_path, monkeypatch):
    train_file, other_file, other = slice_path
    monkeypatch.setenv("KDSL_HOME", str(trained[0]))
    runner = CliRunner()
    assert "blocks" in trained[1] and "kdsl eval --decider b77" in trained[1]
    folder = Settings().home / "deciders" / "b77"
    card = json.loads((folder / "decider.json").read_text(encoding="utf-8"))
    assert card["kind"] == "features" and Path(card["training"]["data_path"]).is_absolute()
    assert (folder / "heads.npz").is_file() and (folder / "split.json").is_file()

    got = runner.invoke(app, ["eval", "--decider", "b77", "--no-memory", "--test", str(other_file), "--out",
                              str(tmp_path / "eval")])
    assert got.exit_code == 0, got.output
    report = json.loads((tmp_path / "eval" / "evaluation.json").read_text(encoding="utf-8"))
    decider = next(r for r in report["results"] if r["mode"] == "decider")
    assert report["n"] == {"intent": len(other)} and decider["scores"]["accuracy"] >= 0.6  # chance: 1/6

    out = tmp_path / "decisions.jsonl"
    got = runner.invoke(app, ["predict", "--decider", "b77", "--in", str(other_file), "--out", str(out)])
    assert got.exit_code == 0, got.output
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == len(other) and all(r["source"] == "decider" and r["decider_top"] for r in rows), rows[0]

    predictor = Predictor.load("b77", Settings())
    assert predictor.info.backend.startswith("features:") and predictor.info.adapter is None
    sample = other.samples[0]
    with TestClient(create_app(predictor)) as client:
        r = client.post("/v1/predict", json={"task": "intent",
                                             "turns": [{"role": "user", "text": sample.turns[0].text}]})
        assert r.status_code == 200, r.text
        [decision] = r.json()["decisions"]
        assert decision["label"] in other.label_spaces["intent"] and len(decision["decider_top"]) == 3
        # A lone surrogate is valid JSON but no text: a 422 with a code, never a 500.
        for body in ('{"task": "intent", "turns": [{"role": "user", "text": "\\ud800 x"}]}',
                     '{"task": "intent", "turns": [{"role": "user", "text": "x"}], "candidates": ["\\ud800"]}'):
            r = client.post("/v1/predict", content=body, headers={"content-type": "application/json"})
            assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_text", r.text
        assert client.get("/healthz").status_code == 200 and client.head("/healthz").status_code == 200

    got = runner.invoke(app, ["serve", "--decider", "b77", "--port", "99999"])
    assert got.exit_code == 2 and "65535" in got.output
    with socket.socket() as taken:  # a port in use: one line, exit 2
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        got = runner.invoke(app, ["serve", "--decider", "b77", "--port", str(port), "--no-warmup"])
    assert got.exit_code == 2 and f"could not serve on 127.0.0.1:{port}" in got.output, got.output

    got = runner.invoke(app, ["train", "--data", str(train_file), "--kind", "nope"])
    assert got.exit_code == 2 and "unknown decider kind 'nope'" in got.output


def _request(port: int, raw: bytes) -> bytes:
    """Send `raw` on a fresh connection and read the whole answer (the server closes it)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(raw)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


@pytest.fixture
def live_server(trained):
    """`kdsl serve`'s uvicorn configuration (the guard included) on a real socket, in a thread, with a 1 s read
    deadline and room for 8 connections."""
    limits = ServeLimits(read_seconds=1.0, max_connections=8)
    predictor = Predictor.load("b77", Settings(home=trained[0]))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(server_config(create_app(predictor, limits), limits, host="127.0.0.1",
                                          port=sock.getsockname()[1], log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    yield server, sock.getsockname()[1]
    server.should_exit = True
    thread.join(10)
    predictor.close()


HEALTHZ = b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"


@pytest.mark.parametrize(("sent", "answer"), [
    (b"", b""),  # connects and says nothing: closed silently
    (b"POST /v1/predict HTTP/1.1\r\nhost: x\r\ncontent-type: app", b"HTTP/1.1 408 "),  # half the headers
    (b"POST /v1/predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 80\r\n\r\n"
     b'{"task": "intent", "tu', b"HTTP/1.1 408 "),  # half the body
], ids=["nothing", "half-headers", "half-body"])
def test_a_stalled_client_is_closed_within_the_read_deadline(live_server, sent, answer):
    server, port = live_server
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as stalled:
        stalled.sendall(sent)
        # Meanwhile the server answers others, HEAD included.
        assert _request(port, HEALTHZ).startswith(b"HTTP/1.1 200 ")
        assert _request(port, HEALTHZ.replace(b"GET", b"HEAD")).startswith(b"HTTP/1.1 200 ")
        got = b""
        while chunk := stalled.recv(65536):  # returns b"" once the server closes the socket
            got += chunk
    assert 0.9 <= time.monotonic() - start < 5, "closed at the 1 s read deadline"
    assert got.startswith(answer) and (not answer or b'"request_timeout"' in got), got


def test_stalled_clients_beyond_the_connection_cap_do_not_crowd_out_others(live_server):
    server, port = live_server
    stalled = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(20)]
    try:
        for s in stalled:
            s.sendall(b"GET /healthz HTTP/1.1\r\nhost")
        assert _request(port, HEALTHZ).startswith(b"HTTP/1.1 200 ")
        assert len(server.server_state.connections) <= 8
    finally:
        for s in stalled:
            s.close()


RULES = {"rules": [{"id": "r-age", "label": "age_limit", "task": "intent", "statement": "age",
                    "when": {"field": "user_text", "any_of": ["age", "old"]}}]}


@pytest.mark.parametrize("command", [
    ["predict", "--decider", "b77", "--in", "{other}", "--out", "{out}"],
    ["features", "build", "--data", "{other}", "--no-images", "--out", "{out}"],
    ["data", "split", "{train}", "--out", "{out}"],
    ["rules", "check", "{rules}", "--data", "{train}", "--no-images", "--out", "{out}"],
    ["rules", "export", "{out}", "--memory", "{memory}"],
    ["report", "no-such-session", "--out", "{out}"],
], ids=lambda c: " ".join(c[:2]))
@pytest.mark.parametrize("where", ["folder", "under-a-file"])
def test_an_output_that_cannot_be_written_is_refused_before_the_work(command, where, slice_path, trained, tmp_path,
                                                                    monkeypatch):
    """--out naming a folder (or a path under a file) is a one-line error before any work; the folder keeps its
    contents."""
    monkeypatch.setenv("KDSL_HOME", str(trained[0]))
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "kept.txt").write_text("kept", encoding="utf-8")
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps(RULES), encoding="utf-8")
    out = folder if where == "folder" else folder / "kept.txt" / "out.json"
    values = {"other": slice_path[1], "train": slice_path[0], "rules": rules, "out": out,
              "memory": tmp_path / "memory"}
    got = CliRunner().invoke(app, [a.format(**{k: str(v) for k, v in values.items()}) for a in command])
    assert got.exit_code == 2, got.output
    assert got.output.startswith("error: ") and len(got.output.strip().splitlines()) == 1, got.output
    assert ("is a folder" if where == "folder" else "is a file, not a folder") in got.output
    assert [p.name for p in folder.iterdir()] == ["kept.txt"] and (folder / "kept.txt").read_text() == "kept"
