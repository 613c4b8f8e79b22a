"""The console shows visionlake's own lines; other libraries' lines go to the log file (all of them with verbose);
Horovod's forwarded rank output is relayed once, marked lines only; child processes' output goes to the file."""
from __future__ import annotations

import logging
import subprocess
import sys
import warnings

import pytest

from visionlake.console import RANK_LINE, RankOutput, child_output_to, configure_logging, rank_line


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
    logging.captureWarnings(False)


def _say_everything() -> None:
    logging.getLogger("visionlake.ingest.job").info("listing: 3 files")
    logging.getLogger("petastorm.reader").warning("Failed loading Unischema from metadata")
    logging.getLogger("mlflow.models").warning("\x1b[33mcloudpickle version mismatch\x1b[0m")
    logging.getLogger("tensorflow").warning("No training configuration found in save file")
    with warnings.catch_warnings():  # shown on every call, not once per process: each test sees its own
        warnings.simplefilter("always")
        warnings.warn("a library's deprecation warning", UserWarning)
    logging.getLogger("visionlake.lake.store").warning("commits to s3a://b/lake are not exclusive")


def test_the_console_shows_visionlake_lines_and_the_file_holds_everyone_s(tmp_path, capsys, restore_logging):
    log_file = tmp_path / "logs" / "visionlake.log"
    configure_logging(str(log_file))
    configure_logging(str(log_file))  # twice, as a job does: no line twice
    _say_everything()

    console = capsys.readouterr().err.splitlines()
    assert [line.split(" ", 1)[1] for line in console] == [
        "listing: 3 files", "WARNING: commits to s3a://b/lake are not exclusive"]
    logged = log_file.read_text()
    for expected in ("INFO visionlake.ingest.job: listing: 3 files", "WARNING petastorm.reader: Failed loading Unischema",
                     "WARNING mlflow.models:", "WARNING tensorflow: No training configuration found",
                     "WARNING py.warnings:", "UserWarning: a library's deprecation warning"):
        assert logged.count(expected) == 1, expected


def test_verbose_brings_the_other_libraries_back_to_the_console(tmp_path, capsys, restore_logging):
    configure_logging(str(tmp_path / "visionlake.log"), verbose=True)
    _say_everything()
    console = capsys.readouterr().err
    assert "Failed loading Unischema" in console and "No training configuration found" in console
    assert "a library's deprecation warning" in console


def test_rank_output_relays_marked_lines_once_and_logs_the_rest(tmp_path, capsys, restore_logging):
    configure_logging(str(tmp_path / "visionlake.log"))
    relayed, seen = [], []
    output = RankOutput(relay=lambda rank, text: relayed.append((rank, text)),
                        on_line=lambda rank, text: seen.append(rank))
    output.write(f"[0]<stdout>:{RANK_LINE}epoch 1/2: loss=0.5\n[1]<stderr>:2026 W tensorflow noise\n[0]<std")
    output.write(f"out>:{RANK_LINE}epoch 2/2: loss=0.3\nHorovod driver line\n[1]<stdout>:")
    output.flush()

    assert relayed == [(0, "epoch 1/2: loss=0.5"), (0, "epoch 2/2: loss=0.3")]
    assert seen == [0, 1, 0, 1]
    assert capsys.readouterr().err == ""
    logged = (tmp_path / "visionlake.log").read_text()
    assert "horovod.ranks: [1] 2026 W tensorflow noise" in logged and "horovod.ranks: Horovod driver line" in logged
    assert "epoch" not in logged, "relayed lines reach the file through the relay's own logger, not twice"


def test_a_rank_line_carries_the_marker(capsys):
    rank_line("epoch 3/8: loss=0.1")
    assert capsys.readouterr().out == f"{RANK_LINE}epoch 3/8: loss=0.1\n"


def test_child_processes_write_to_the_log_file_and_the_console_comes_back(tmp_path, capfd):
    log_file = tmp_path / "visionlake.log"
    with child_output_to(str(log_file)):
        subprocess.run([sys.executable, "-c", "import sys; print('jvm banner'); print('WARN x', file=sys.stderr)"],
                       check=True)
    subprocess.run([sys.executable, "-c", "print('after')"], check=True)
    with child_output_to(None):
        subprocess.run([sys.executable, "-c", "print('unredirected')"], check=True)

    assert log_file.read_text().splitlines() == ["jvm banner", "WARN x"]
    assert capfd.readouterr().out.splitlines() == ["after", "unredirected"]


def test_library_prints_go_to_the_log_even_through_a_handler_that_writes_to_stderr(tmp_path, capsys,
                                                                                    restore_logging):
    from visionlake.console import library_prints_to_log

    configure_logging(str(tmp_path / "visionlake.log"))
    # MLflow's own handler (when MLflow configured its logging first) resolves sys.stderr at each record.
    library = logging.getLogger("mlflow")
    library.addHandler(_StderrAtEachRecord())
    try:
        with library_prints_to_log("mlflow"):
            print("Successfully registered model 'm'.")
            print("1/1 [====] - 0s", file=sys.stderr)
    finally:
        library.handlers.clear()
    assert "Successfully registered model 'm'." in (tmp_path / "visionlake.log").read_text()
    assert "Successfully registered" in capsys.readouterr().err, "the library's handler still wrote it, once"


class _StderrAtEachRecord(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        sys.stderr.write(self.format(record) + "\n")


def test_rank_zero_s_step_reports_move_a_bar_on_a_terminal_and_never_reach_the_log(monkeypatch, capsys):
    from visionlake import progress

    logged = []
    for terminal in (True, False):
        monkeypatch.setattr(progress, "bars_enabled", lambda: terminal)
        watcher = progress.TrainingProgress(lambda rank, text: logged.append((rank, text)))
        watcher(0, progress.step_report(3, 40, 1, 2))
        watcher(0, "epoch 1/2: loss=0.5")
        watcher(0, progress.step_report(25, 40, 2, 2))
        watcher.close()
        bar = capsys.readouterr().err
        assert ("25/40 steps" in bar and "training, epoch 2/2" in bar) == terminal, bar
    assert logged == [(0, "epoch 1/2: loss=0.5")] * 2
    assert progress.parse_step_report("epoch 1/2: steps 3/4") is None


def test_rank_output_keeps_each_writer_s_partial_line_apart():
    import threading

    seen = []
    output = RankOutput(relay=lambda rank, text: seen.append((rank, text)))
    output.write("[1]<stderr>:half a li")  # Horovod's copy of rank 1's stderr stops mid-line ...
    other = threading.Thread(target=output.write, args=(f"[0]<stdout>:{RANK_LINE}epoch 1/2\n",))
    other.start()  # ... while the relay delivers rank 0's whole line from another thread
    other.join()
    output.write("ne\n")
    output.write(f"[1]<stdout>:{RANK_LINE}last, unterminated")
    output.flush()
    assert seen == [(0, "epoch 1/2"), (1, "last, unterminated")]
