"""The driver's line relay that both engines' ranks send their progress lines through (no Spark)."""
from __future__ import annotations

import io
import socket
import sys
import threading
import time

import pytest

from visionlake.console import RANK_LINE
from visionlake.train.relay import LineRelay, driver_relay, rank_lines_to_driver


def test_the_relay_writes_each_tasks_lines_and_refuses_strangers_and_retries():
    output = io.StringIO()
    relay = LineRelay("127.0.0.1", output)
    try:
        with socket.create_connection(("127.0.0.1", relay.port)) as stranger:
            stranger.sendall(b"not-the-token\n0\n[0]<stdout>:injected\n")
        with driver_relay(0, ("127.0.0.1", relay.port), relay.token) as to_driver:
            to_driver.write("[0]<stdout>:hello\n")
            to_driver.write("[0]<stdout>:world")
        with pytest.raises(RuntimeError, match="visionlake rank 0 exited with status -1 .*not retried"):
            with driver_relay(0, ("127.0.0.1", relay.port), relay.token):
                pass
    finally:
        relay.close()
    assert output.getvalue() == "[0]<stdout>:hello\n[0]<stdout>:world\n"
    assert not [t for t in threading.enumerate() if t.name == "visionlake-rank-relay"]


def test_a_rank_s_progress_lines_reach_the_driver_while_it_runs_and_the_rest_stays_on_its_stdout(capsys):
    output = io.StringIO()
    relay = LineRelay("127.0.0.1", output)
    try:
        with rank_lines_to_driver(1, relay.address, relay.token):
            print(f"{RANK_LINE}epoch 1/2", flush=True)
            print("a library's chatter")
            deadline = time.monotonic() + 10
            while "epoch 1/2" not in output.getvalue() and time.monotonic() < deadline:
                time.sleep(0.01)
            arrived_while_running = output.getvalue()
            sys.stdout.write(f"{RANK_LINE}epoch 2/2")  # a last line without its newline
    finally:
        relay.close()
    assert arrived_while_running == f"[1]<stdout>:{RANK_LINE}epoch 1/2\n"
    assert output.getvalue().endswith(f"[1]<stdout>:{RANK_LINE}epoch 2/2\n")
    assert capsys.readouterr().out == "a library's chatter\n"


def test_a_rank_that_cannot_reach_the_relay_still_runs_and_says_so(capsys):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    with rank_lines_to_driver(0, ("127.0.0.1", closed_port), "token"):
        print(f"{RANK_LINE}epoch 1/1")
    out = capsys.readouterr().out
    assert "cannot reach the driver's line relay" in out and out.endswith(f"{RANK_LINE}epoch 1/1\n")


def test_a_broken_relay_sends_the_rank_s_lines_to_its_own_stdout_instead_of_failing_it():
    from visionlake.train.relay import RankLines

    class Broken(io.StringIO):
        def write(self, text):
            raise BrokenPipeError("the driver went away")

    rest = io.StringIO()
    lines = RankLines(0, Broken(), rest)
    print(f"{RANK_LINE}epoch 1/1", file=lines)
    print("chatter", file=lines)
    assert rest.getvalue() == f"{RANK_LINE}epoch 1/1\nchatter\n"
