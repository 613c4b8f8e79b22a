"""Progress: rank 0's step lines (throttled), the driver's epoch bar fed by them through the rank relay; no bars when
the console is not a terminal (the phase bar on real Spark: tests/integration/test_console.py)."""
from __future__ import annotations

import logging

from visionlake import progress
from visionlake.console import PROGRESS_LINE, RankOutput
from visionlake.progress import EpochProgress, StepReporter


def test_rank_zero_reports_steps_at_most_every_interval_and_always_the_last(capsys, monkeypatch):
    clock = iter([0.0, 0.2, 0.4, 1.3, 1.5, 1.6])
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    reporter = StepReporter(epoch=3, epochs=8, steps=6, interval=1.0)
    for done in range(1, 7):
        reporter.step(done)
    assert capsys.readouterr().out.splitlines() == [f"{PROGRESS_LINE}3/8 1/6", f"{PROGRESS_LINE}3/8 4/6",
                                                    f"{PROGRESS_LINE}3/8 6/6"]


def test_step_lines_feed_the_epoch_bar_on_a_terminal_and_nothing_else(capsys, monkeypatch, caplog):
    monkeypatch.setattr(progress, "bars_enabled", lambda: True)
    bar = EpochProgress()
    output = RankOutput(relay=lambda rank, text: None, progress=bar.update)
    with caplog.at_level(logging.INFO):
        output.write(f"[0]<stdout>:{PROGRESS_LINE}1/2 3/10\n[0]<stdout>:{PROGRESS_LINE}1/2 10/10\n")
        output.write(f"[0]<stdout>:{PROGRESS_LINE}2/2 4/10\n")
    assert bar._bar.desc == "epoch 2/2" and (bar._bar.n, bar._bar.total) == (4, 10)
    bar.close()
    assert "epoch 1/2" in capsys.readouterr().err
    assert not caplog.records, "step lines are neither relayed nor logged"


def test_no_bar_when_the_console_is_not_a_terminal(capsys, monkeypatch):
    monkeypatch.setattr(progress, "bars_enabled", lambda: False)
    bar = EpochProgress()
    bar.update("1/2 3/10")
    assert bar._bar is None and capsys.readouterr().err == ""
