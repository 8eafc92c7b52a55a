"""`kdsl report`: the HTML page of a real (model-free) discovery session, its content, its escaping of untrusted
text, partial sessions, the CLI, and the page in a real headless Chromium (Debian's chromium-headless-shell, driven
over the DevTools protocol on a pipe: no browser download, no extra Python package)."""

from __future__ import annotations

import html
import json
import os
import re
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from typer.testing import CliRunner

from kdsl.cli.main import app
from kdsl.report import render_report, write_report
from kdsl.traces import TraceEvent, TraceLog

runner = CliRunner()
# The n-gram author's rules are narrow; with these verify thresholds seed 1 accepts a rule on MDSIRC in 60 iterations.
DISCOVER = ["--task", "dialogue_intent", "--author", "ngram", "--iterations", "60", "--seed", "1", "--no-images",
            "--min-support", "1", "--min-precision-lower", "0.15", "--target-precision", "0", "--decider", "majority"]
EVIL = '<script>alert("kdsl")</script>'


class Session(NamedTuple):
    home: Path
    session_id: str
    folder: Path


@pytest.fixture(scope="module")
def session(mdsirc_path, tmp_path_factory) -> Session:
    home = tmp_path_factory.mktemp("report-home")
    ran = runner.invoke(app, ["discover", "--data", str(mdsirc_path), *DISCOVER], env={"KDSL_HOME": str(home)})
    assert ran.exit_code == 0, ran.output
    [folder] = list((home / "sessions").iterdir())
    return Session(home, folder.name, folder)


def _json(folder: Path, name: str) -> Any:
    return json.loads((folder / name).read_text(encoding="utf-8"))


def _element(page: str, tag: str, ident: str) -> str:
    """The HTML of the first `<tag id="ident" ...>...</tag>` (tables and lists here do not nest their own tag)."""
    start = page.index(f'<{tag} id="{ident}"')
    return page[start:page.index(f"</{tag}>", start)]


def _copy(session: Session, tmp_path: Path) -> Path:
    return Path(shutil.copytree(session.folder, tmp_path / session.session_id))


def test_the_page_shows_what_the_session_did(session):
    page = render_report(session.folder)
    report, evaluation = _json(session.folder, "report.json"), _json(session.folder, "evaluation.json")
    verdict, search = _json(session.folder, "verdict.json"), _json(session.folder, "search.json")
    n = evaluation["n"]

    assert page.startswith("<!DOCTYPE html>") and f"<title>kdsl session {session.session_id}</title>" in page
    assert "<script" not in page.lower() and "http://" not in page and "https://" not in page  # self-contained
    for shown in ("dialogue_intent", "ngram", "mcts", "60 iterations", report["search"]["stop_reason"]):
        assert html.escape(str(shown)) in page

    # Every rule of the best set, with its verdict; the accepted ones marked so.
    rules = _element(page, "table", "rules-table")
    rows = rules.split("<tr")[2:]
    assert len(rows) == len(verdict["rules"]) > 0
    accepted = {a["id"] for a in report["accepted_rules"]}
    assert accepted, "seed 1 with these thresholds accepts a rule"
    for v in verdict["rules"]:
        [row] = [r for r in rows if v["rule_id"] in r]
        assert html.escape(v["label"]) in row and html.escape(v["condition"]) in row
        assert f"{v['stats']['precision_lower']:.3f}" in row
        assert ('class="badge accepted"' in row) == (v["rule_id"] in accepted)

    # Test scores as evaluation.json has them, with the bootstrap interval.
    scores = _element(page, "table", "test-scores")
    for key in ("rules", "fallback", "rules_with_fallback"):
        assert f"{evaluation[key]['weighted_f1']:.4f}" in scores
    boot = evaluation["bootstrap"]
    assert f"CI {boot['low']:+.4f} .. {boot['high']:+.4f}" in page

    # Per-class F1 and the confusion matrix, recomputed from the session's files, agree with evaluation.json.
    assert "differs from evaluation.json" not in page
    per_class = _element(page, "table", "per-class")
    total_row = per_class.split("<tr")[-1]
    assert f"{evaluation['rules_with_fallback']['weighted_f1']:.4f}" in total_row
    confusion = _element(page, "table", "confusion")
    counts = [int(c) for c in re.findall(r'data-count="(\d+)"', confusion)]
    diagonal = [int(c) for c in re.findall(r'class="num diag" data-count="(\d+)"', confusion)]
    assert f'data-total="{n}"' in confusion and sum(counts) == n
    assert sum(diagonal) == round(evaluation["rules_with_fallback"]["accuracy"] * n)

    # The whole tree, the best path marked from the root to the best state.
    tree = page[page.index('<ul id="search-tree"'):]
    assert len(re.findall(r'data-node="\d+"', tree)) == len(search["nodes"])
    by_id = {node["id"]: node for node in search["nodes"]}
    path, cursor = [], search["best_node"]
    while cursor is not None:
        path.append(cursor)
        cursor = by_id[cursor]["parent"]
    assert tree.count('<li class="best">') == len(path) > 1
    assert f'★ <b>#{search["best_node"]}</b>' in tree

    # Costs and the timeline come from the trace.
    events = TraceLog(session.folder / "events.jsonl").read()
    author_tokens = sum(e.tokens for e in events if e.agent == "author")
    assert author_tokens == report["costs"]["tokens"] and f"<td class=num>{author_tokens}</td>" in _element(
        page, "table", "agent-costs")
    assert _element(page, "table", "timeline").count("<tr") == len(events) + 1


def _inject(folder: Path) -> None:
    """Untrusted text where a model or the data could put it: a rule's statement and label, an edit, the trace."""
    rules = _json(folder, "rules.json")
    rules["rules"][0]["statement"] = EVIL
    rules["rules"][0]["label"] = '<img src=x onerror="alert(1)">'
    (folder / "rules.json").write_text(json.dumps(rules, ensure_ascii=False), encoding="utf-8")
    verdict = _json(folder, "verdict.json")
    verdict["rules"][0].update(statement=EVIL, label='<img src=x onerror="alert(1)">', reason=EVIL)
    (folder / "verdict.json").write_text(json.dumps(verdict, ensure_ascii=False), encoding="utf-8")
    search = _json(folder, "search.json")
    node = search["nodes"][1]
    node["edit_key"] = node["edit_key"].replace("|dialogue_intent|", f"|dialogue_intent|{EVIL}", 1)
    (folder / "search.json").write_text(json.dumps(search, ensure_ascii=False), encoding="utf-8")
    TraceLog(folder / "events.jsonl").append(TraceEvent(
        session=folder.name, node="discover", agent="author", model=EVIL, output=f"</pre></details>{EVIL}" * 40))


def test_untrusted_text_is_escaped(session, tmp_path):
    folder = _copy(session, tmp_path)
    _inject(folder)
    page = render_report(folder)
    assert "<script" not in page.lower() and "<img" not in page.lower()
    assert html.escape(EVIL) in page
    rules = _element(page, "table", "rules-table")
    assert html.escape(EVIL) in rules and html.escape('<img src=x onerror="alert(1)">') in rules
    assert html.escape(EVIL) in page[page.index('<ul id="search-tree"'):]
    assert html.escape(EVIL) in _element(page, "table", "timeline")


def test_a_crashed_or_running_session_renders_what_exists(session, tmp_path):
    folder = _copy(session, tmp_path)
    for name in ("search.json", "verdict.json", "evaluation.json", "report.json", "committed.json"):
        (folder / name).unlink()
    with (folder / "events.jsonl").open("a", encoding="utf-8") as f:
        f.write('{"session": "cut by a kil')  # a line cut by a crash
    page = render_report(folder)
    assert "This session is stopped" in page and f"kdsl discover --resume {session.session_id}" in page
    assert "could not be rendered" not in page
    assert "No search.json yet" in page and "No evaluation.json yet" in page
    rules = _element(page, "table", "rules-table")
    assert rules.count("not verified yet") == len(_json(folder, "rules.json")["rules"])

    (folder / "split.json").write_text("{damaged", encoding="utf-8")
    (folder / "config.json").write_text("[]", encoding="utf-8")
    page = render_report(folder)
    assert "split.json" in page and "config.json does not hold a JSON dict" in page

    bare = tmp_path / "bare"
    bare.mkdir()
    assert "config.json is missing" in render_report(bare)
    with pytest.raises(FileNotFoundError):
        render_report(tmp_path / "nowhere")


def test_the_cli_writes_the_page_and_names_unknown_sessions(session, tmp_path):
    env = {"KDSL_HOME": str(session.home)}
    out = tmp_path / "pages" / "session.html"
    wrote = runner.invoke(app, ["report", session.session_id, "--out", str(out)], env=env)
    assert wrote.exit_code == 0, wrote.output
    assert str(out) in wrote.output and out.read_text(encoding="utf-8") == render_report(session.folder)
    default = runner.invoke(app, ["report", session.session_id], env=env)
    assert default.exit_code == 0 and (session.folder / "report.html").exists()

    for unknown in ("no-such-session", "../../etc"):
        missing = runner.invoke(app, ["report", unknown], env=env)
        assert missing.exit_code == 1
        assert "kdsl sessions list" in missing.output and missing.output.strip().count("\n") == 0, missing.output


# -- a real browser ---------------------------------------------------------------------------------------------------
CHROMIUMS = ("chromium-headless-shell", "chromium", "chromium-browser")


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (fd 3: commands in, fd 4: replies out, each
    message JSON ending in NUL): what Playwright does, with nothing but the standard library."""

    def __init__(self, binary: str, profile: Path):
        cmd_r, self._cmd_w = os.pipe()
        self._out_r, out_w = os.pipe()

        def child_fds() -> None:  # runs in the child before exec: the pipe ends become fds 3 and 4
            r, w = os.dup(cmd_r), os.dup(out_w)
            os.dup2(r, 3)
            os.dup2(w, 4)

        self.proc = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--remote-debugging-pipe",
             f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=child_fds, pass_fds=(3, 4))
        os.close(cmd_r)
        os.close(out_w)
        self._next, self._buffer, self.events = 0, b"", []

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._out_r], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._out_r, 1 << 16)
            if not chunk:
                raise RuntimeError(f"Chromium exited (code {self.proc.poll()})")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30) -> Any:
        self._next += 1
        message = {"id": self._next, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._cmd_w, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        for seen in self.events:
            if seen.get("method") == method:
                return seen
        while True:
            event = self._read(deadline)
            self.events.append(event)
            if event.get("method") == method:
                return event

    def load(self, url: str) -> tuple[str, list[str]]:
        """Open the page in a new tab; (session id, the errors the page raised: console, exceptions, log)."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        tab = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session=tab)
        self.events.clear()
        self.send("Page.navigate", {"url": url}, session=tab)
        self.wait_for("Page.loadEventFired")
        self.send("Runtime.evaluate", {"expression": "1"}, session=tab)  # flush what the load logged
        errors = []
        for e in self.events:
            p = e.get("params", {})
            if e.get("method") == "Runtime.exceptionThrown":
                errors.append(str(p.get("exceptionDetails")))
            elif e.get("method") == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                errors.append(str(p.get("args")))
            elif e.get("method") == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                errors.append(p["entry"].get("text", ""))
        return tab, errors

    def evaluate(self, tab: str, expression: str) -> Any:
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=tab)
        if "exceptionDetails" in result:
            raise RuntimeError(str(result["exceptionDetails"]))
        return result["result"].get("value")

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except (OSError, RuntimeError, TimeoutError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._cmd_w)
        os.close(self._out_r)


@pytest.fixture
def chromium(tmp_path):
    binary = next((path for name in CHROMIUMS if (path := shutil.which(name))), None)
    if binary is None:
        pytest.fail("no headless Chromium on this machine: run `make chromium` (Debian's chromium-headless-shell)")
    browser = Chromium(binary, tmp_path / "chromium-profile")
    yield browser
    browser.close()


DOM = """JSON.stringify({
  title: document.title,
  scripts: document.scripts.length,
  treeNodes: document.querySelectorAll('#search-tree [data-node]').length,
  bestPath: document.querySelectorAll('#search-tree li.best').length,
  openBranches: document.querySelectorAll('#search-tree details[open]').length,
  ruleRows: document.querySelectorAll('#rules-table tbody tr').length,
  acceptedRows: document.querySelectorAll('#rules-table tbody tr.accepted').length,
  perClass: document.querySelectorAll('#per-class tbody tr').length,
  confusionCells: Array.from(document.querySelectorAll('#confusion td')).reduce((s, td) => s + (+td.dataset.count), 0),
  svg: document.querySelectorAll('svg.curve polyline').length,
  evilText: Array.from(document.querySelectorAll('#rules-table td')).some(td => td.textContent.includes('<script>')),
})"""


def test_the_page_loads_in_headless_chromium(session, chromium, tmp_path):
    verdict, search = _json(session.folder, "verdict.json"), _json(session.folder, "search.json")
    report, evaluation = _json(session.folder, "report.json"), _json(session.folder, "evaluation.json")
    page = write_report(session.folder, tmp_path / "clean.html")
    tab, errors = chromium.load(page.as_uri())
    assert errors == []
    dom = json.loads(chromium.evaluate(tab, DOM))
    assert dom["title"] == f"kdsl session {session.session_id}" and dom["scripts"] == 0
    assert dom["treeNodes"] == len(search["nodes"]) and dom["bestPath"] > 1 and dom["openBranches"] >= 1
    assert dom["ruleRows"] == len(verdict["rules"]) and dom["acceptedRows"] == len(report["accepted_rules"])
    assert dom["perClass"] > 1 and dom["confusionCells"] == evaluation["n"] and dom["svg"] == 1

    # The injected page: the script is text in a cell, nothing ran, nothing was blocked (nothing tried to run).
    folder = _copy(session, tmp_path)
    _inject(folder)
    tab, errors = chromium.load(write_report(folder).as_uri())
    assert errors == []
    dom = json.loads(chromium.evaluate(tab, DOM))
    assert dom["scripts"] == 0 and dom["evilText"] is True
