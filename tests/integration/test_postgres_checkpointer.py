"""Sessions checkpointed in a real PostgreSQL server (Debian's package, `make postgres`) that the test starts in a
scratch folder: a run, a kill -9 in the search and `--resume` from the database, and the one-line errors."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from kdsl.cli import discover_cmd
from kdsl.graph import resume_session
from kdsl.graph.checkpointer import redact

TASK = "dialogue_intent"
DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "www2025-mdsirc"
QUICK = ["--data", str(DATA), "--task", TASK, "--no-images", "--decider", "majority", "--folds", "3",
         "--min-support", "1", "--min-precision-lower", "0.15", "--target-precision", "0"]


def _bin_dir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), reverse=True)
    if found:
        return found[0].parent
    if which := shutil.which("initdb"):
        return Path(which).resolve().parent
    pytest.fail("no PostgreSQL server on this machine: run `make postgres` (Debian's postgresql package)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(*cmd: str) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{' '.join(cmd)}: {done.stderr or done.stdout}"


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server on a free local port with a `kdsl` database and a password user; stopped at the end.
    The server refuses to run as root, so as root it runs as the `postgres` system user (in a folder of its own
    under /tmp: pytest's are closed to other users)."""
    bin_dir, root = _bin_dir(), Path(tempfile.mkdtemp(prefix="kdsl-pg-"))
    data, port = root / "data", _free_port()
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(root, "postgres")
    (root / "pw").write_text("secret\n")
    if as_user:
        shutil.chown(root / "pw", "postgres")
    _run(*as_user, str(bin_dir / "initdb"), "-D", str(data), "-U", "kdsl", "--pwfile", str(root / "pw"), "-A", "scram-sha-256",
        "--no-sync")
    _run(*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-t", "60", "-o",
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
    try:
        url = f"postgresql://kdsl:secret@127.0.0.1:{port}/postgres"
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE DATABASE kdsl")
        yield f"postgresql://kdsl:secret@127.0.0.1:{port}/kdsl"
    finally:
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def _checkpoints(url: str, thread: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM checkpoints WHERE thread_id = %s", (thread,)).fetchone()[0]


def test_session_checkpoints_in_postgres(home, postgres):
    result = CliRunner().invoke(discover_cmd.app, [*QUICK, "--iterations", "40", "--checkpointer", postgres])
    assert result.exit_code == 0, result.output
    [folder] = list(home.sessions_dir.iterdir())
    assert not (folder / "checkpoints.sqlite").exists()
    stored = json.loads((folder / "config.json").read_text())["config"]["checkpointer"]
    assert stored == redact(postgres) and "secret" not in (folder / "config.json").read_text()
    assert _checkpoints(postgres, folder.name) >= 8  # one per node at least
    # Resuming a finished session reads its last checkpoint from the database and runs nothing again.
    again = resume_session(folder.name, home, checkpointer_url=postgres)
    assert not again.paused and again.state["committed"] is not None


def test_sigkill_in_the_search_then_resume_from_postgres(home, postgres, kill_in_search):
    folder = kill_in_search([*QUICK, "--iterations", "100000", "--budget-seconds", "6", "--seed", "2",
                             "--checkpointer", postgres])
    before = _checkpoints(postgres, folder.name)
    assert before >= 1  # prepare's checkpoint is in the database

    # The password comes from the environment on resume, as libpq does for every PostgreSQL client.
    result = CliRunner().invoke(discover_cmd.app, ["--resume", folder.name], env={"PGPASSWORD": "secret"})
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]
    node_starts = [e["node"] for e in events if e.get("agent") is None]
    assert node_starts.count("prepare") == 1, "resume must go on from the database, not prepare again"
    assert (folder / "report.json").exists() and _checkpoints(postgres, folder.name) > before
    assert not (folder / "checkpoints.sqlite").exists()


@pytest.mark.parametrize(("args", "says"), [
    (["--checkpointer", "mysql://x@localhost/db"], "PostgreSQL URL"),
    (["--checkpointer", "postgresql://kdsl:wrong@127.0.0.1:1/kdsl"], "cannot connect"),
])
def test_bad_checkpointer_is_a_one_line_error(home, args, says):
    result = CliRunner().invoke(discover_cmd.app, [*QUICK, "--iterations", "5", *args])
    assert result.exit_code == 2, result.output
    assert says in " ".join(result.output.split()) and "Traceback" not in result.output
    assert "wrong" not in result.output  # the password is never shown
    assert not home.sessions_dir.exists() or not any(home.sessions_dir.iterdir()), "no ghost session"
