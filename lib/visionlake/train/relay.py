"""Rank output to the driver, line by line, as it is printed.

Both engines relay each rank's lines through one socket on the driver (loopback in local mode), which a rank joins
with the run's token. Horovod forwards a rank's own output too, but its copy reads in 64 KiB blocks
(``shutil.copyfileobj`` over a socket), so a run's epoch lines would reach the console only when it ends.
"""
from __future__ import annotations

import contextlib
import io
import secrets
import socket
import socketserver
import sys
import threading
from typing import Iterator, Optional, TextIO

from visionlake.console import RANK_LINE


class _RelayHandler(socketserver.StreamRequestHandler):
    """One rank's connection: ``token`` and its rank, then the rank's output lines."""

    def handle(self) -> None:
        relay: LineRelay = self.server.relay  # type: ignore[attr-defined]
        if self.rfile.readline().decode().strip() != relay.token:
            return  # not one of this run's tasks
        rank = int(self.rfile.readline().decode())
        with relay.connection():  # counted before the task may start its rank, so close() waits for its last line
            self.wfile.write(b"go\n" if relay.first_attempt(rank) else b"retry\n")
            self.wfile.flush()
            for raw in self.rfile:
                relay.deliver(raw.decode(errors="replace"))


class LineRelay:
    """A socket on the driver that writes the lines ranks (or their barrier tasks) send into ``output`` (the
    launcher's ``RankOutput``), one line at a time; they prove they belong to this run with ``token``."""

    def __init__(self, bind_host: str, output: TextIO, connect_host: str = ""):
        self._connect_host = connect_host or bind_host
        self.token = secrets.token_hex(16)
        self._output, self._lock = output, threading.Lock()
        self._open, self._all_closed = 0, threading.Condition()
        self._started: set[int] = set()
        self._server = socketserver.ThreadingTCPServer((bind_host, 0), _RelayHandler, bind_and_activate=True)
        self._server.daemon_threads = True
        self._server.relay = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, name="visionlake-rank-relay", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def first_attempt(self, rank: int) -> bool:
        """False for a rank Spark starts again after a failed attempt: alone it would train from scratch, and the
        first attempt's failure is what to report."""
        with self._lock:
            first = rank not in self._started
            self._started.add(rank)
            return first

    def deliver(self, line: str) -> None:
        with self._lock:
            self._output.write(line if line.endswith("\n") else line + "\n")

    @contextlib.contextmanager
    def connection(self) -> Iterator[None]:
        with self._all_closed:
            self._open += 1
        try:
            yield
        finally:
            with self._all_closed:
                self._open -= 1
                self._all_closed.notify_all()

    def close(self, drain_seconds: float = 10.0) -> None:
        """Stops the relay once the tasks' connections have delivered their last lines (a failed rank's traceback
        is among them), waiting at most ``drain_seconds`` for a connection a lost task left open."""
        with self._all_closed:
            self._all_closed.wait_for(lambda: self._open == 0, timeout=drain_seconds)
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=drain_seconds)

    @property
    def address(self) -> tuple[str, int]:
        return self._connect_host, self.port

    @classmethod
    def on_driver(cls, conf, loopback: bool, output: TextIO) -> "LineRelay":
        """The relay for one run: on 127.0.0.1 in local mode, else where the executors reach the driver."""
        if loopback:
            return cls("127.0.0.1", output)
        driver_host = conf.get("spark.driver.host")
        return cls(conf.get("spark.driver.bindAddress", driver_host), output, connect_host=driver_host)


@contextlib.contextmanager
def driver_relay(rank: int, relay_address: tuple[str, int], token: str,
                 timeout: Optional[float] = None) -> Iterator[TextIO]:
    """This rank's line to the driver's relay (``timeout``: for connecting and the reply); refuses to run a rank
    Spark retries."""
    with socket.create_connection(relay_address, timeout=timeout) as connection, \
            connection.makefile("rw", encoding="utf-8", errors="replace") as to_driver:
        to_driver.write(f"{token}\n{rank}\n")
        to_driver.flush()
        if to_driver.readline().strip() != "go":
            raise RuntimeError(f"visionlake rank {rank} exited with status -1 (Spark retried it after a failure; "
                               "ranks are not retried)")
        connection.settimeout(None)
        yield to_driver


class RankLines(io.TextIOBase):
    """A rank's ``sys.stdout`` while it runs under Horovod: the lines it marks with ``RANK_LINE`` go to the
    driver's relay at once, tagged as Horovod tags what it forwards; everything else to ``rest``. When the relay
    breaks, every line goes to ``rest`` (Horovod's copy): a progress display must never fail training."""

    def __init__(self, rank: int, to_driver: TextIO, rest: TextIO):
        self._rank, self._to_driver, self._rest, self._partial = rank, to_driver, rest, ""
        self._lock = threading.Lock()

    @property
    def encoding(self):
        return self._rest.encoding

    def fileno(self) -> int:
        return self._rest.fileno()

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        with self._lock:
            *lines, self._partial = (self._partial + text).split("\n")
            for line in lines:
                self._write_line(line)
        return len(text)

    def _write_line(self, line: str) -> None:
        if self._to_driver is not None and line.startswith(RANK_LINE):
            try:
                self._to_driver.write(f"[{self._rank}]<stdout>:{line}\n")
                self._to_driver.flush()
                return
            except OSError:
                self._to_driver = None
        self._rest.write(line + "\n")

    def flush(self) -> None:
        with self._lock:
            if self._partial:
                line, self._partial = self._partial, ""
                self._write_line(line)
        self._rest.flush()


_CONNECT_SECONDS = 10


@contextlib.contextmanager
def rank_lines_to_driver(rank: int, relay_address: tuple[str, int], token: str) -> Iterator[None]:
    """Inside the block, this rank's ``RANK_LINE`` lines reach the driver live. A rank that cannot reach the relay
    (a firewall between executors and driver) still runs: its lines then arrive with Horovod's copy, at the end."""
    with contextlib.ExitStack() as stack:
        try:
            to_driver = stack.enter_context(driver_relay(rank, relay_address, token, timeout=_CONNECT_SECONDS))
        except OSError as error:
            print(f"{RANK_LINE}warning: cannot reach the driver's line relay at {relay_address} ({error}); this "
                  "rank's progress arrives when it ends", flush=True)
            to_driver = None
        if to_driver is None:
            yield
            return
        original = sys.stdout
        sys.stdout = RankLines(rank, to_driver, original)
        try:
            yield
        finally:
            try:
                sys.stdout.flush()
            finally:
                sys.stdout = original
