"""A discovery session on a disk that fills up: one line that names the file and says how to go on, the work done
kept, and `--resume` finishing the session once there is room again.

The disk is a real 1 MiB tmpfs mounted under the test's folder, so the error comes from the kernel (ENOSPC), not a
stand-in. Mounting needs root (CI runs as root); elsewhere the test is skipped and says why.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kdsl.cli.main import app


def _mount(folder: Path, size: str, remount: bool = False) -> None:
    options = f"remount,size={size}" if remount else f"size={size}"
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill ({done.stderr.strip() or done.returncode}): needs root")


@pytest.fixture
def small_disk(tmp_path: Path):
    home = tmp_path / "home"
    home.mkdir()
    _mount(home, "1m")
    try:
        yield home
    finally:
        subprocess.run(["umount", "-l", str(home)], check=False)


def test_full_disk_is_one_line_and_the_session_resumes(small_disk: Path, banking77_slice, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    data = banking77_slice(5, 12)
    monkeypatch.setenv("KDSL_HOME", str(small_disk))
    runner = CliRunner()

    got = runner.invoke(app, ["discover", "--data", str(data), "--iterations", "4"])
    assert got.exit_code == 2, got.output
    message = got.output.strip()
    assert "\n" not in message and message.startswith("error: ") and "No space left on device" in message, message
    assert str(small_disk) in message  # the file that could not be written
    session = next(p.name for p in (small_disk / "sessions").iterdir() if "." not in p.name)
    assert f"kdsl discover --resume {session}" in message
    assert (small_disk / "sessions" / session / "config.json").is_file()  # what was written is kept

    _mount(small_disk, "64m", remount=True)  # room again
    got = runner.invoke(app, ["discover", "--resume", session])
    assert got.exit_code == 0, got.output
    assert "weighted F1" in got.output
    assert list((small_disk / "sessions").glob(f"{session}*/report.json"))
