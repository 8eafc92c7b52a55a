"""Progress shows in a log file: plain lines with counts and the time left, not a bar that draws nothing there."""

from __future__ import annotations

import io

from rich.console import Console
from rich.progress import Progress

from kdsl._internal.progress import LineProgress, progress


def test_a_file_gets_lines_every_tenth_of_the_work():
    out = io.StringIO()
    bar = progress(console=Console(file=out, force_terminal=False))
    assert isinstance(bar, LineProgress)
    ticks = iter(range(0, 10_000, 2))  # two seconds a sample
    bar.clock = lambda: float(next(ticks))
    with bar:
        task = bar.add_task("image features", total=50, info="")
        for i in range(50):
            bar.update(task, advance=1, info=f"{i + 1} run")
    lines = out.getvalue().splitlines()
    assert len(lines) == 10
    assert lines[0].startswith("image features: 5/50 after") and "s left" in lines[0] and "(5 run)" in lines[0]
    assert lines[-1].startswith("image features: 50/50")


def test_quiet_prints_nothing_and_a_terminal_gets_a_bar():
    out = io.StringIO()
    with progress(console=Console(file=out, force_terminal=False), disable=True) as bar:
        task = bar.add_task("x", total=3)
        bar.update(task, advance=3)
    assert out.getvalue() == ""
    assert isinstance(progress(console=Console(file=io.StringIO(), force_terminal=True)), Progress)


def test_quick_work_prints_one_line():
    out = io.StringIO()
    with LineProgress(out) as bar:
        task = bar.add_task("image features", total=7)
        for _ in range(7):
            bar.update(task, advance=1)
    assert out.getvalue().count("\n") == 1 and out.getvalue().startswith("image features: 7/7")
