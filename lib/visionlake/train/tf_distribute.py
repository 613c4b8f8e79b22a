"""The ``tf_distribute`` engine: the same rank loop on TensorFlow's ``MultiWorkerMirroredStrategy``, one worker per
Spark barrier task, for stacks Horovod cannot build on (Keras 3, TF >= 2.16).

Driver side, ``run_on_barrier`` starts ``num_proc`` barrier tasks. Each task starts its rank in a fresh Python
process (TensorFlow's collective runtime can be set up once per process and Spark reuses its Python workers), learns
the port the rank holds, shares it with its peers (the barrier context's ``allGather``) and hands the rank its
``TF_CONFIG``. The rank holds its port from before the exchange until just before TensorFlow binds it, so that
another process on the node (another job's Spark, another rank) cannot take it in between. The
rank's output reaches the driver line by line over a socket (one relay, loopback in local mode) and its result as
bytes through Spark; nothing on an executor's disk is handed over.

Rank side, ``join`` creates the strategy and returns ``StrategyCollectives``: the handful of Horovod calls the rank
loop makes (rank, size, allreduce, broadcast, a distributed gradient tape) done with the strategy's all-reduce, so
the loop, the models and the trainers are one code path for both engines.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, TextIO

from visionlake.console import RANK_LINE
from visionlake.train.relay import LineRelay, driver_relay

log = logging.getLogger(__name__)

_EXIT_REPORT = re.compile(r"visionlake rank (\d+) exited with status (-?\d+)")


# TensorFlow's gRPC server listens on every interface: grpc_server_lib.cc hard-codes "0.0.0.0:<port>" and gRPC widens
# that to the dual-stack "[::]". In local mode each rank process preloads this bind() wrapper, which binds such wildcard
# addresses to loopback instead (IPv4 127.0.0.1; for IPv6 sockets the IPv4-mapped ::ffff:127.0.0.1, so the peers'
# 127.0.0.1 connections still arrive), and every other address as asked.
_LOOPBACK_BIND_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

int bind(int fd, const struct sockaddr *addr, socklen_t len) {
    static int (*real_bind)(int, const struct sockaddr *, socklen_t);
    if (!real_bind) real_bind = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "bind");
    if (addr && addr->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        struct sockaddr_in in4;
        memcpy(&in4, addr, sizeof in4);
        if (in4.sin_addr.s_addr == htonl(INADDR_ANY)) {
            in4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            return real_bind(fd, (const struct sockaddr *)&in4, sizeof in4);
        }
    } else if (addr && addr->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 in6;
        memcpy(&in6, addr, sizeof in6);
        if (IN6_IS_ADDR_UNSPECIFIED(&in6.sin6_addr)) {
            memset(&in6.sin6_addr, 0, sizeof in6.sin6_addr);
            in6.sin6_addr.s6_addr[10] = 0xff;
            in6.sin6_addr.s6_addr[11] = 0xff;
            in6.sin6_addr.s6_addr[12] = 127;
            in6.sin6_addr.s6_addr[15] = 1;
            return real_bind(fd, (const struct sockaddr *)&in6, sizeof in6);
        }
    }
    return real_bind(fd, addr, len);
}
"""


def loopback_bind_library(folder: Path) -> Optional[str]:
    """Compiles the ``bind()`` wrapper into ``folder`` (the rank's own private scratch, never a shared path another
    user could plant a library at) with the C compiler Horovod's build needs anyway; ``None`` where there is no
    compiler or it fails."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    source, built = folder / "loopback_bind.c", folder / "loopback_bind.so"
    source.write_text(_LOOPBACK_BIND_C)
    compiled = subprocess.run([compiler, "-shared", "-fPIC", "-O2", "-o", str(built), str(source), "-ldl"],
                              capture_output=True, text=True)
    return str(built) if compiled.returncode == 0 else None


def _preloaded(env: dict[str, str], library: str) -> dict[str, str]:
    present = env.get("LD_PRELOAD", "")
    return {**env, "LD_PRELOAD": f"{library} {present}".strip()}


# ---- pure helpers ------------------------------------------------------------------------------------------------
def tf_config(peers: list[str], rank: int) -> dict[str, Any]:
    """``TF_CONFIG`` for worker ``rank`` of the cluster whose workers listen on ``peers`` (host:port, rank order)."""
    if not 0 <= rank < len(peers):
        raise ValueError(f"rank {rank} is not one of the {len(peers)} workers")
    return {"cluster": {"worker": list(peers)}, "task": {"type": "worker", "index": rank}}


def local_rank(config: dict[str, Any]) -> int:
    """This worker's index among the workers on its own host (which GPU it takes), from its ``TF_CONFIG``."""
    workers, index = config["cluster"]["worker"], config["task"]["index"]
    host = workers[index].rsplit(":", 1)[0]
    return sum(1 for peer in workers[:index] if peer.rsplit(":", 1)[0] == host)


# ---- rank side -----------------------------------------------------------------------------------------------------
class _AveragedTape:
    """``hvd.DistributedGradientTape``'s contract: ``gradient`` returns the gradients averaged over the workers."""

    def __init__(self, tape, collectives: "StrategyCollectives"):
        self._tape, self._collectives = tape, collectives

    def gradient(self, target, sources):
        gradients = self._tape.gradient(target, sources)
        present = [i for i, gradient in enumerate(gradients) if gradient is not None]
        summed = self._collectives.sum([gradients[i] for i in present])
        averaged = list(gradients)
        for i, total in zip(present, summed):
            averaged[i] = total / self._collectives.size()
        return averaged


class StrategyCollectives:
    """The collective calls the rank loop makes, on a ``MultiWorkerMirroredStrategy`` with one replica per worker.

    Variables stay ordinary per-worker variables, kept identical the way the strategy keeps mirrored ones: the same
    start (a broadcast of rank 0's state) and the same averaged gradients on every worker.
    """
    Sum = "sum"
    Average = "average"

    def __init__(self, strategy):
        self._strategy = strategy

    def rank(self) -> int:
        return int(self._strategy.cluster_resolver.task_id)

    def size(self) -> int:
        return int(self._strategy.num_replicas_in_sync)

    def sum(self, values):
        """The element-wise sum over the workers of a tensor or a list of tensors (eager or inside a
        ``tf.function``); every worker must make the same calls in the same order."""
        import tensorflow as tf

        def all_reduce(local):
            # The all-reduce places each value on this replica's device; a graph tensor from outside has none.
            local = tf.nest.map_structure(tf.identity, local)
            return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, local)

        values = tf.nest.map_structure(tf.convert_to_tensor, values)
        if isinstance(values, list) and not values:
            return []
        return self._strategy.experimental_local_results(self._strategy.run(all_reduce, args=(values,)))[0]

    def allreduce(self, value, op=Average):
        total = self.sum(value)
        return total / self.size() if op == self.Average else total

    def broadcast(self, value, root_rank: int):
        import tensorflow as tf

        value = tf.convert_to_tensor(value)
        return self.sum(value if self.rank() == root_rank else tf.zeros_like(value))

    def broadcast_variables(self, variables, root_rank: int) -> None:
        import tensorflow as tf

        variables = list(variables)
        mine = [tf.convert_to_tensor(v) if self.rank() == root_rank else tf.zeros_like(v) for v in variables]
        for variable, value in zip(variables, self.sum(mine)):
            variable.assign(value)

    def DistributedGradientTape(self, tape):  # noqa: N802 - Horovod's name, so the loop calls one API
        return _AveragedTape(tape, self)


# The start-up handshake between a barrier task and its rank process, through files in the rank's private scratch
# folder (RENDEZVOUS_ENV): the rank writes PORT_FILE, the task answers with CLUSTER_FILE (the rank's TF_CONFIG).
RENDEZVOUS_ENV, HOST_ENV = "VISIONLAKE_TF_RENDEZVOUS", "VISIONLAKE_TF_HOST"
PORT_FILE, CLUSTER_FILE = "port", "tf_config"
_POLL_SECONDS = 0.01
_held_port: Optional[socket.socket] = None


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    partial.rename(path)


def await_cluster(folder: Path, host: str) -> dict[str, Any]:
    """Rank side of the handshake: binds a port on ``host`` and keeps it bound, tells the barrier task
    (``folder/port``), and waits for the cluster (``folder/tf_config``); returns that ``TF_CONFIG``. The port stays
    bound until ``release_port``, just before TensorFlow binds it."""
    global _held_port
    _held_port = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    _held_port.bind((host, 0))
    _write_atomically(folder / PORT_FILE, str(_held_port.getsockname()[1]))
    cluster = folder / CLUSTER_FILE
    while not cluster.exists():  # the task always answers, or kills this process
        time.sleep(_POLL_SECONDS)
    return json.loads(cluster.read_text())


def release_port() -> None:
    global _held_port
    if _held_port is not None:
        _held_port.close()
        _held_port = None


def _tf_config() -> dict[str, Any]:
    """This rank's ``TF_CONFIG``: from the environment, else from the handshake (once; then it is in the
    environment, where the strategy reads it)."""
    if "TF_CONFIG" not in os.environ:
        os.environ["TF_CONFIG"] = json.dumps(await_cluster(Path(os.environ[RENDEZVOUS_ENV]), os.environ[HOST_ENV]))
    return json.loads(os.environ["TF_CONFIG"])


def worker_local_rank() -> int:
    """This rank process's local rank, from the ``TF_CONFIG`` its barrier task gave it."""
    return local_rank(_tf_config())


def join() -> StrategyCollectives:
    """Joins the workers named in ``TF_CONFIG``; call once per process, before any other TensorFlow work."""
    import tensorflow as tf

    _tf_config()
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # "using the strategy eagerly has overhead": per epoch
    gpus = tf.config.list_physical_devices("GPU")  # logical devices would start the runtime too early
    implementation = (tf.distribute.experimental.CommunicationImplementation.NCCL if gpus
                      else tf.distribute.experimental.CommunicationImplementation.RING)
    options = tf.distribute.experimental.CommunicationOptions(implementation=implementation)
    release_port()  # the strategy binds it now
    return StrategyCollectives(tf.distribute.MultiWorkerMirroredStrategy(communication_options=options))


# ---- driver side ---------------------------------------------------------------------------------------------------
def _await_port(work: Path, process: subprocess.Popen) -> Optional[int]:
    """The port the rank process holds (``None`` if it ended before it told)."""
    port = work / PORT_FILE
    while not port.exists():
        if process.poll() is not None:
            return None
        time.sleep(_POLL_SECONDS)
    return int(port.read_text())


def _forward(process: subprocess.Popen, rank: int, to_driver: TextIO) -> threading.Thread:
    def forward() -> None:
        for line in process.stdout:  # tagged as Horovod tags the output it forwards
            to_driver.write(f"[{rank}]<stdout>:{line.rstrip(chr(10))}\n")
            to_driver.flush()

    thread = threading.Thread(target=forward, name=f"visionlake-rank-{rank}-output", daemon=True)
    thread.start()
    return thread


def _barrier_task(payload: bytes, relay_address: tuple[str, int], token: str, loopback: bool,
                  env: dict[str, str]) -> Callable[[Iterator[Any]], Iterator[bytes]]:
    def run(_partition: Iterator[Any]) -> Iterator[bytes]:
        from pyspark import BarrierTaskContext

        context = BarrierTaskContext.get()
        rank = context.partitionId()
        host = "127.0.0.1" if loopback else context.getTaskInfos()[rank].address.rsplit(":", 1)[0]
        with driver_relay(rank, relay_address, token) as to_driver, \
                tempfile.TemporaryDirectory(prefix="visionlake-rank-") as scratch:  # this task's, same node
            work = Path(scratch)
            (work / "payload").write_bytes(payload)
            rank_env = {**os.environ, **env, RENDEZVOUS_ENV: scratch, HOST_ENV: host,
                        "PYTHONPATH": os.pathsep.join(os.path.abspath(p) for p in sys.path if p)}
            rank_env.pop("TF_CONFIG", None)
            library = loopback_bind_library(work) if loopback else None
            if library:
                rank_env = _preloaded(rank_env, library)
            elif loopback:
                to_driver.write(f"[{rank}]<stdout>:{RANK_LINE}warning: no C compiler (cc) on this node to build "
                                "the loopback bind wrapper: this rank listens on every interface\n")
            process = subprocess.Popen([sys.executable, "-m", "visionlake.train.tf_worker", scratch,
                                        str(os.getpid())], env=rank_env, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, encoding="utf-8", errors="replace", cwd=scratch)
            try:
                forwarding = _forward(process, rank, to_driver)
                port = _await_port(work, process)
                peers = context.allGather(f"{host}:{port}" if port else "")
                if all(peers):
                    if len(set(peers)) != len(peers):  # cannot happen while each rank holds its port; kept as a guard
                        raise RuntimeError(f"visionlake rank {rank} exited with status -1 (two workers drew the same "
                                           f"port: {peers}; run again)")
                    _write_atomically(work / CLUSTER_FILE, json.dumps(tf_config(peers, rank)))
                elif port:  # a peer ended before the workers joined: its own task reports it
                    process.kill()
                forwarding.join()
                status = process.wait()
            finally:
                if process.poll() is None:
                    process.kill()
            if status != 0:
                raise RuntimeError(f"visionlake rank {rank} exited with status {status}")
            result = (work / "result").read_bytes()
        yield result
    return run


def run_on_barrier(spark, fn: Callable, args: tuple, num_proc: int, output: TextIO, loopback: bool,
                   env: dict[str, str]) -> list[Any]:
    """Runs ``fn(*args)`` as ``num_proc`` tf.distribute workers in one Spark barrier stage; returns their results
    in rank order. A failed rank fails the stage (Spark stops the others) with ``RuntimeError("visionlake rank N
    exited with status S")``; its printed traceback has reached ``output`` by then."""
    import cloudpickle

    conf = spark.sparkContext.getConf()
    if conf.get("spark.dynamicAllocation.enabled", "false").lower() == "true":
        raise RuntimeError("train.engine=tf_distribute runs its ranks as one Spark barrier stage, which Spark refuses "
                           "under dynamic allocation: set spark.dynamicAllocation.enabled=false for training jobs")
    relay = LineRelay.on_driver(conf, loopback, output)
    task = _barrier_task(cloudpickle.dumps((fn, args)), relay.address, relay.token, loopback, env)
    try:
        tasks = spark.sparkContext.parallelize(range(num_proc), num_proc).barrier().mapPartitions(task)
        return [cloudpickle.loads(result) for result in tasks.collect()]
    except Exception as error:  # noqa: BLE001 - py4j's error holds the task's message among Spark's stack traces
        report = _EXIT_REPORT.search(str(error))
        raise RuntimeError(report.group(0) if report else str(error).splitlines()[0]) from error
    finally:
        relay.close()
