"""A real SIGKILL while a `kdsl discover` session commits its accepted rules to the rule memory, then
`kdsl discover --resume ID`: the session finishes, every accepted rule is in the memory exactly once (none lost, none
twice, its measurement not counted twice), and the memory still lists and searches.

Where the kill lands is made exact without any hook in kdsl: the memory's generation file
(`<memory>/kdsl-memory.generation`, read when the memory opens and again at the end of every write, while the write
still holds the memory's lock) is a named pipe here, so the session blocks on it; the test feeds it the generation the
store would hold and lets writes through one by one. The session is killed while blocked at the end of write K: rule K
is in Chroma, the write's lock is held, rules K+1.. are not written, and the commit node has not returned (no
checkpoint after it, no committed.json). K is 1 (the first rule of several) or the last rule.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from kdsl.agents.verifier import Verdict
from kdsl.config import Settings
from kdsl.graph import resume_session
from kdsl.memory import RuleMemory
from kdsl.memory.store import document_text
from kdsl.rules import RuleSet
from kdsl.search import rule_key
from kdsl.traces import TraceLog

TASK = "dialogue_intent"
DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "www2025-mdsirc"
# As in test_discover.py: loose verify bounds for the narrow n-gram rules. 150 iterations with seed 3 accept 3 rules.
ARGS = ["--data", str(DATA), "--task", TASK, "--author", "ngram", "--iterations", "150", "--seed", "3", "--no-images",
        "--min-support", "1", "--min-precision-lower", "0.15", "--target-precision", "0", "--decider", "majority"]
CLI = "import sys; from kdsl.cli.discover_cmd import app; sys.argv[0] = 'kdsl-discover'; app()"
GENERATION = "kdsl-memory.generation"  # kdsl.memory.store._GENERATION_FILE
WAIT = 240.0  # a bound for a stuck session, generous for a loaded CI machine (it is not a timing)


def _discover(home: Settings, *args: str, stdout=subprocess.DEVNULL) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CLI, *args], env={**os.environ, "KDSL_HOME": str(home.home)},
                            stdout=stdout, stderr=subprocess.PIPE)


def _died(proc: subprocess.Popen) -> str:
    return f"the session ended (rc {proc.returncode}) before the kill: {proc.stderr.read().decode()[-3000:]}"


def _wait_for_reader(fifo: Path, proc: subprocess.Popen, deadline: float) -> int:
    """Block until the session opens `fifo` to read it (it then waits there); a write end of it for the test."""
    while True:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as e:
            if e.errno != errno.ENXIO:  # ENXIO: no reader yet
                raise
        assert proc.poll() is None, _died(proc)
        assert time.monotonic() < deadline, "the session never reached the rule memory's generation file"
        time.sleep(0.01)


def _answer(gen: Path, value: int, proc: subprocess.Popen, deadline: float) -> None:
    """Wait for the session to read the generation, then give it `value`. A fresh pipe goes to `gen` first, while
    the session still waits on the old one: its next read is a new open that blocks again, never this one."""
    fd = _wait_for_reader(gen, proc, deadline)
    fresh = gen.with_name(gen.name + ".fresh")
    os.mkfifo(fresh)
    os.replace(fresh, gen)
    os.write(fd, str(value).encode())
    os.close(fd)


def _let_write_through(gen: Path, tmp: Path, value: int, proc: subprocess.Popen, deadline: float) -> None:
    """The session is at the end of a write, about to read the generation. Give it `value`; its new generation goes
    through `tmp` (a pipe too, drained here) and is renamed over `gen`, so its next read blocks again."""
    os.mkfifo(tmp)
    rfd = os.open(tmp, os.O_RDONLY | os.O_NONBLOCK)  # with a reader there, the session's open of tmp returns at once
    try:
        _answer(gen, value, proc, deadline)
        got = b""
        while not got or tmp.exists():  # its new generation written, and tmp renamed over gen
            try:
                got += os.read(rfd, 64)
            except BlockingIOError:  # the session has tmp open but has not written yet
                pass
            assert proc.poll() is None, _died(proc)
            assert time.monotonic() < deadline, "the session never wrote its new generation"
            time.sleep(0.005)
        assert got == str(value + 1).encode()
    finally:
        os.close(rfd)


def _accepted_ids(folder: Path) -> list[str]:
    """The ids the verify node accepted, in the order commit writes them (verdict order, as nodes.verify has it)."""
    min_precision = json.loads((folder / "config.json").read_text())["config"]["min_precision"]
    verdict = Verdict.model_validate_json((folder / "verdict.json").read_text(encoding="utf-8"))
    return [v.rule_id for v in verdict.rules if v.accepted and v.stats.precision >= min_precision]


@pytest.mark.parametrize("kill_after", ["first", "last"], ids=["after-first-write", "after-last-write"])
def test_sigkill_while_committing_then_resume(home, tmp_path, kill_after):
    memory_dir = home.home / "memory"
    memory_dir.mkdir(parents=True)
    gen = memory_dir / GENERATION
    os.mkfifo(gen)
    proc = _discover(home, *ARGS)
    tmp = gen.with_name(f"{gen.name}.{proc.pid}.tmp")  # RuleMemory._bump_generation's temporary file
    deadline = time.monotonic() + WAIT
    try:
        _answer(gen, 0, proc, deadline)  # commit opened the memory (a new store: generation 0)
        [folder] = list(home.sessions_dir.iterdir())
        accepted_ids = _accepted_ids(folder)
        assert len(accepted_ids) >= 2, "the session should accept several rules, to kill between their writes"
        kill_at = 1 if kill_after == "first" else len(accepted_ids)
        for k in range(1, kill_at):
            _let_write_through(gen, tmp, k - 1, proc, deadline)
        # Blocked at the end of write `kill_at`, under the lock; the pipe stays open for writing (closing it would
        # hand the session an end of file and let it go on) until it is dead.
        fd = _wait_for_reader(gen, proc, deadline)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        os.close(fd)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL

    # The pipes stand in for the file a real kill at this point leaves: the generation of the writes completed.
    for p in (gen, tmp, gen.with_name(gen.name + ".fresh")):
        p.unlink(missing_ok=True)
    gen.write_text(str(kill_at - 1))

    # Killed inside commit: verify is done and checkpointed, commit has not returned.
    nodes = [e.node for e in TraceLog(folder / "events.jsonl").read() if e.agent is None]
    assert nodes == ["prepare", "discover", "verify"]
    assert not (folder / "committed.json").exists() and not (folder / "report.json").exists()
    at_kill = shutil.copytree(memory_dir, tmp_path / "memory-at-kill")  # looked at after the resume, on a copy

    resumed = _discover(home, "--resume", folder.name, stdout=subprocess.PIPE)
    out, err = resumed.communicate(timeout=WAIT)
    assert resumed.returncode == 0, err.decode()[-3000:]
    assert folder.name in out.decode()

    # The session finished, with the same accepted rules, each committed.
    report = json.loads((folder / "report.json").read_text())
    nodes = [e.node for e in TraceLog(folder / "events.jsonl").read() if e.agent is None]
    assert nodes == ["prepare", "discover", "verify", "commit", "arbiter", "evaluate", "report"]
    assert [a["id"] for a in report["accepted_rules"]] == accepted_ids
    by_id = {r.id: r for r in RuleSet.load(folder / "rules.json")}
    accepted = [by_id[i] for i in accepted_ids]
    committed = report["committed"]
    assert len(committed) == len(accepted) and json.loads((folder / "committed.json").read_text()) == committed
    verdict = {v.rule_id: v.stats for v in Verdict.model_validate_json((folder / "verdict.json").read_text()).rules}

    with RuleMemory(at_kill, settings=home) as before:  # what the kill left: exactly the first `kill_at` rules
        assert sorted(rule_key(r) for r in before.list(status=None)) == sorted(
            {rule_key(r) for r in accepted[:kill_at]})

    with RuleMemory(settings=home) as memory:
        stored = memory.list(status=None)  # every document, whatever its status
        counts = Counter(rule_key(r) for r in stored)
        for rule in accepted:
            assert counts[rule_key(rule)] == 1, f"{rule.id} ({rule_key(rule)}) is stored {counts[rule_key(rule)]} times"
        assert len(stored) == len(memory) == len({rule_key(r) for r in accepted}), "documents beyond the accepted"
        for rule, memory_id in zip(accepted, committed, strict=True):
            kept = memory.get(memory_id)
            assert rule_key(kept) == rule_key(rule) and kept.status == "accepted"
            # The re-run commit refreshed this session's measurement; it did not pool it with itself.
            assert memory.record(memory_id).sessions == (folder.name,)
            assert kept.stats == verdict[rule.id]
            hits = memory.search(document_text(kept), k=len(stored), task=TASK)
            assert memory_id in [h.rule.id for h in hits]
        assert {r.id for r in memory.list(task=TASK, status="accepted")} == set(committed)

    # Resuming the finished session again changes nothing.
    again = resume_session(folder.name, home)
    assert not again.paused and again.state["committed"] == committed
    with RuleMemory(settings=home) as memory:
        assert len(memory) == len(stored)
