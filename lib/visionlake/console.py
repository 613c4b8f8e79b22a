"""The console is for people: visionlake's own progress, summaries and errors. Everything other libraries say
(Spark's JVM and its Python workers, py4j, petastorm, MLflow, TensorFlow, Horovod, Python warnings) goes to the log
file; ``--verbose`` brings it back to the console.

Horovod ranks are separate processes whose output reaches the driver through Horovod's forwarding; a rank marks the
lines meant for people with ``RANK_LINE``, and ``RankOutput`` relays those once, as ``rank N: ...``.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
from pathlib import Path
from typing import Callable, Iterator, Optional, TextIO

OWN_LOGGERS = ("visionlake", "__main__")
RANK_LINE = "visionlake-rank| "
_HANDLER_MARK = "_visionlake_handler"
_FORWARDED = re.compile(r"^\[(\d+)\]<(stdout|stderr)>:(.*)$")
_CONSOLE_FORMAT = "%(asctime)s %(message)s"
_FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Libraries that install their own console handlers: their records are routed through ours instead.
_SELF_CONFIGURED = ("mlflow",)


class _OwnRecords(logging.Filter):
    """visionlake's records only."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name.split(".", 1)[0] in OWN_LOGGERS


class _Py4JReconnectFilter(logging.Filter):
    """Horovod's driver forks helper processes that inherit the py4j socket; when one exits, py4j logs the reset
    with a traceback through the root logger and then reconnects on its own. The record is noise, not an error."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "Exception while sending command."


class _ConsoleFormatter(logging.Formatter):
    """``12:03:04 message``; warnings and errors say so."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        if record.levelno >= logging.WARNING:
            stamp, _, message = line.partition(" ")
            return f"{stamp} {record.levelname}: {message}"
        return line


def configure_logging(log_file: Optional[str] = None, verbose: bool = False) -> None:
    """Console: visionlake's records (everyone's with ``verbose``); ``log_file``: everyone's, appended.

    Idempotent: a second call replaces the handlers of the first (jobs and tests call it more than once).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up banners, before it is imported
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")  # MLflow's own coloured console handler
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # its bar for every small download
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(handler)
        handler.close()
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(_ConsoleFormatter(_CONSOLE_FORMAT, datefmt="%H:%M:%S"))
    console.addFilter(_Py4JReconnectFilter())
    if not verbose:
        console.addFilter(_OwnRecords())
    handlers = [console]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        to_file = logging.FileHandler(log_file, encoding="utf-8", delay=True)
        to_file.setFormatter(logging.Formatter(_FILE_FORMAT, datefmt="%Y-%m-%d %H:%M:%S"))
        to_file.addFilter(_Py4JReconnectFilter())
        handlers.append(to_file)
    for handler in handlers:
        setattr(handler, _HANDLER_MARK, True)
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    # Python warnings become records of "py.warnings": the file, not the console. Released first, because a
    # second capture is a no-op even when something (a notebook, a test runner) has replaced the hook since.
    logging.captureWarnings(False)
    logging.captureWarnings(True)
    for noisy in ("py4j", "pyspark"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for name in _SELF_CONFIGURED:
        library = logging.getLogger(name)
        library.handlers.clear()
        library.propagate = True


@contextlib.contextmanager
def child_output_to(log_file: Optional[str]) -> Iterator[None]:
    """Processes started inside this block (Spark's JVM, and through it Spark's Python workers) write their stdout
    and stderr to ``log_file``: they inherit the descriptors, which point at the file for the block's duration. The
    JVM's log4j console, Python workers' warnings and library banners then stay off the console. None: no change."""
    if not log_file:
        yield
        return
    Path(log_file).parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    target = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(target, 1)
        os.dup2(target, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for descriptor in (target, *saved):
            os.close(descriptor)


class _LineStream:
    """A text stream that hands each complete line to ``_line``; a partial line waits for its end or ``flush``."""
    _line_ends = "\n"

    def __init__(self):
        self._buffer = ""

    def write(self, text: str) -> int:
        self._buffer += text
        *lines, self._buffer = re.split(f"[{self._line_ends}]", self._buffer)
        for line in lines:
            self._line(line)
        return len(text)

    def flush(self) -> None:
        line, self._buffer = self._buffer, ""
        if line:
            self._line(line)

    def _line(self, line: str) -> None:
        raise NotImplementedError


class _LineLogger(_LineStream):
    """Logs each complete line (a progress bar's carriage returns end lines too) to a logger. A handler that itself
    writes to the redirected stream (MLflow's resolves ``sys.stderr`` at each record; so does logging's last
    resort) would feed the lines back in: while a line is being logged, writes go to ``fallback``, the stream the
    redirect replaced."""
    _line_ends = "\r\n"

    def __init__(self, logger: logging.Logger, fallback: TextIO):
        super().__init__()
        self._logger = logger
        self._fallback = fallback
        self._logging = False

    def write(self, text: str) -> int:
        return self._fallback.write(text) if self._logging else super().write(text)

    def flush(self) -> None:
        if self._logging:
            self._fallback.flush()
        else:
            super().flush()

    def _line(self, line: str) -> None:
        if not line.strip():
            return
        self._logging = True
        try:
            self._logger.info("%s", line)
        finally:
            self._logging = False


@contextlib.contextmanager
def library_prints_to_log(library: str) -> Iterator[None]:
    """What a library ``print``s inside the block (MLflow's "Successfully registered model", Keras progress bars
    while MLflow validates an input example) is logged as ``library``'s records: the log file, not the console."""
    stream = _LineLogger(logging.getLogger(library), fallback=sys.stderr)
    try:
        with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
            yield
    finally:
        stream.flush()


class RankOutput(_LineStream):
    """A stream for ``horovod.spark.run(stdout=..., stderr=...)``: relays the lines ranks mark with ``RANK_LINE``
    to ``relay`` once, every other line to the log file (the ``horovod.ranks`` logger), and lets ``on_line`` see
    each line (e.g. for a failing rank's traceback)."""

    def __init__(self, relay: Callable[[int, str], None], on_line: Optional[Callable[[int, str], None]] = None):
        super().__init__()
        self._relay = relay
        self._on_line = on_line
        self._raw = logging.getLogger("horovod.ranks")
        # Several threads write here (Horovod's copy of each rank's stdout and stderr, in blocks that end mid-line,
        # and the relay's whole lines): each keeps its own partial line, and one line is handled at a time.
        self._partials: dict[int, str] = {}
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            writer = threading.get_ident()
            *lines, self._partials[writer] = (self._partials.get(writer, "") + text).split("\n")
            for line in lines:
                self._line(line)
        return len(text)

    def flush(self) -> None:
        with self._lock:
            partials, self._partials = self._partials, {}
            for line in partials.values():
                if line:
                    self._line(line)

    def _line(self, line: str) -> None:
        match = _FORWARDED.match(line)
        if not match:
            if line.strip():
                self._raw.info("%s", line)
            return
        rank, content = int(match.group(1)), match.group(3)
        if self._on_line:
            self._on_line(rank, content)
        if content.startswith(RANK_LINE):
            self._relay(rank, content[len(RANK_LINE):])
        elif content.strip():
            self._raw.info("[%d] %s", rank, content)


def rank_line(text: str, stream: Optional[TextIO] = None) -> None:
    """Prints ``text`` from a rank as a line the driver relays to the console."""
    print(f"{RANK_LINE}{text}", file=stream or sys.stdout, flush=True)
