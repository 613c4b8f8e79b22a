"""The tf_distribute engine's pure parts and its driver-side relay (no Spark, no TensorFlow cluster)."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from visionlake.train.tf_distribute import (CLUSTER_FILE, _await_port, _preloaded, await_cluster, local_rank,
                                            loopback_bind_library, release_port, tf_config)


def test_tf_config_names_every_worker_in_rank_order_and_this_task():
    peers = ["127.0.0.1:4001", "127.0.0.1:4002", "127.0.0.1:4003"]
    assert tf_config(peers, 1) == {"cluster": {"worker": peers}, "task": {"type": "worker", "index": 1}}
    with pytest.raises(ValueError, match="rank 3 is not one of the 3 workers"):
        tf_config(peers, 3)


def test_local_rank_counts_earlier_workers_on_the_same_host():
    peers = ["10.0.0.5:4001", "10.0.0.6:4001", "10.0.0.5:4002", "10.0.0.6:4002", "10.0.0.5:4003"]
    assert [local_rank(tf_config(peers, rank)) for rank in range(5)] == [0, 0, 1, 1, 2]


@pytest.mark.skipif(not shutil.which("cc"), reason="needs a C compiler (cc), as Horovod's build does")
def test_the_loopback_bind_wrapper_is_built_in_the_rank_s_own_folder_and_preloaded_first(tmp_path):
    library = loopback_bind_library(tmp_path)
    assert library == str(tmp_path / "loopback_bind.so") and Path(library).stat().st_size > 0
    assert _preloaded({"LD_PRELOAD": "other.so"}, library)["LD_PRELOAD"] == f"{library} other.so"
    assert _preloaded({}, library)["LD_PRELOAD"] == library


def test_the_reported_rank_is_the_one_that_failed_first_on_its_own():
    from visionlake.train.launcher import _ERROR_MARKER, _RankFailures

    failures = _RankFailures()
    # Rank 0's report of the consequence ("Horovod has been shut down") arrives before rank 1's own error.
    for rank, line in [(0, _ERROR_MARKER), (0, "UnknownError: Horovod has been shut down. This was caused by ..."),
                       (1, _ERROR_MARKER), (1, "ValueError: rank one cannot go on")]:
        failures(rank, line)
    assert failures.root_cause() == 1
    only_consequences = _RankFailures()
    only_consequences(2, _ERROR_MARKER)
    only_consequences(2, "Horovod has been shut down")
    assert only_consequences.root_cause() == 2


def test_a_rank_holds_its_port_from_the_exchange_until_tensorflow_binds_it(tmp_path):
    """Two test sessions' ranks once raced for one port between its probe and TensorFlow's bind ("Could not start
    gRPC server"): now no other process can bind the port while the peers exchange it."""
    joined = {}
    rank = threading.Thread(target=lambda: joined.update(await_cluster(tmp_path, "127.0.0.1")))
    rank.start()
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        port = _await_port(tmp_path, idle)
        with socket.socket() as other, pytest.raises(OSError):
            other.bind(("127.0.0.1", port))  # held while the cluster is not known yet
        config = tf_config([f"127.0.0.1:{port}"], 0)
        (tmp_path / CLUSTER_FILE).write_text(json.dumps(config))
        rank.join(timeout=10)
        assert joined == config
        with socket.socket() as other, pytest.raises(OSError):
            other.bind(("127.0.0.1", port))  # still held until the strategy is about to bind it
        release_port()
        with socket.socket() as tensorflow:
            tensorflow.bind(("127.0.0.1", port))
    finally:
        idle.kill()
        release_port()


def test_a_rank_that_ends_before_it_tells_its_port_is_noticed(tmp_path):
    ended = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    ended.wait()
    assert _await_port(tmp_path, ended) is None
