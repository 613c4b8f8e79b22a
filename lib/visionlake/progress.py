"""Live progress on a terminal: the tasks of a long Spark phase (listing, decoding, writing, scoring), and the
steps of a training run across its ranks. Bars are drawn on the console's terminal only; when the console is a file
or a pipe (CI, Airflow) there are none, and each phase still logs one line when it ends (training: one per epoch).
"""
from __future__ import annotations

import contextlib
import logging
import re
import sys
import threading
import time
from typing import TYPE_CHECKING, Callable, Iterator, Optional

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
# Rank 0 reports its step this often (the ranks step together, so its count is the run's).
STEP_REPORT_SECONDS = 0.5
_STEP_MARK = "steps "
_STEP_REPORT = re.compile(_STEP_MARK + r"(\d+)/(\d+) (epoch \d+/\d+)")


def bars_enabled() -> bool:
    """Bars only where a person watches a terminal."""
    return sys.stderr.isatty()


def _bar(description: str, unit: str):
    from tqdm import tqdm

    return tqdm(total=0, desc=description, unit=unit, file=sys.stderr, leave=False, dynamic_ncols=True,
                bar_format="{desc}: {bar} {n_fmt}/{total_fmt} {unit} [{elapsed}]")


def spark_task_counts(spark: "SparkSession", stages_seen: dict[int, tuple[int, int]]) -> tuple[int, int]:
    """(completed, total) tasks of the stages active now or seen before in this phase (``stages_seen`` keeps
    them: a finished stage still counts in the phase's total)."""
    tracker = spark.sparkContext.statusTracker()
    for stage_id in tracker.getActiveStageIds():
        info = tracker.getStageInfo(stage_id)
        if info is not None:
            stages_seen[stage_id] = (info.numCompletedTasks, info.numTasks)
    return sum(done for done, _ in stages_seen.values()), sum(total for _, total in stages_seen.values())


@contextlib.contextmanager
def phase(name: str, spark: Optional["SparkSession"] = None) -> Iterator[None]:
    """Logs ``name: N.Ns`` when the block ends; on a terminal, a bar of the Spark tasks it runs meanwhile."""
    started = time.perf_counter()
    stop = threading.Event()
    watcher = None
    if spark is not None and bars_enabled():
        watcher = threading.Thread(target=_watch_tasks, args=(spark, name, stop), daemon=True)
        watcher.start()
    try:
        yield
    finally:
        stop.set()
        if watcher is not None:
            watcher.join(timeout=5)
    log.info("%s: %.1fs", name, time.perf_counter() - started)


def _watch_tasks(spark: "SparkSession", name: str, stop: threading.Event) -> None:
    stages: dict[int, tuple[int, int]] = {}
    bar = _bar(name, "tasks")
    try:
        while not stop.wait(POLL_SECONDS):
            done, total = spark_task_counts(spark, stages)
            bar.total, bar.n = total, done
            bar.refresh()
    except Exception:  # noqa: BLE001 - a progress bar must never fail the work it watches
        log.debug("progress bar for %s stopped", name, exc_info=True)
    finally:
        bar.close()


def step_report(done: int, total: int, epoch: int, epochs: int) -> str:
    """Rank 0's progress line: ``done`` of ``total`` steps of the run, in ``epoch`` (1-based) of ``epochs``."""
    return f"{_STEP_MARK}{done}/{total} epoch {epoch}/{epochs}"


def parse_step_report(text: str) -> Optional[tuple[int, int, str]]:
    """(done, total, "epoch E/N") from a ``step_report`` line; None for any other line."""
    match = _STEP_REPORT.fullmatch(text)
    return (int(match.group(1)), int(match.group(2)), match.group(3)) if match else None


class TrainingProgress:
    """What the driver does with the lines ranks relay: step reports move a bar (on a terminal; elsewhere they are
    dropped), every other line goes to ``log_line`` with the bar cleared around it."""

    def __init__(self, log_line: Callable[[int, str], None]):
        self._log_line = log_line
        self._enabled = bars_enabled()
        self._bar = None

    def __call__(self, rank: int, text: str) -> None:
        report = parse_step_report(text)
        if report is not None:
            if self._enabled:
                try:
                    self._show(*report)
                except Exception:  # noqa: BLE001 - a progress bar must never fail the training it watches
                    log.debug("training progress bar stopped", exc_info=True)
                    self._enabled = False
            return
        if self._bar is not None:
            self._bar.clear()
        self._log_line(rank, text)
        if self._bar is not None:
            self._bar.refresh()

    def _show(self, done: int, total: int, epoch: str) -> None:
        if self._bar is None:
            self._bar = _bar("training", "steps")
        self._bar.total, self._bar.n = total, done
        self._bar.set_description_str(f"training, {epoch}", refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
