"""The shared launcher: every distributed trainer (classifier, GAN, VAE, detectors) runs through here, on either
engine (``train.engine``).

``run_on_ranks`` starts ``num_proc`` ranks in Spark tasks, as Horovod processes (Gloo, loopback-only in local mode)
or as ``tf.distribute`` workers in a barrier stage (``train/tf_distribute``), and turns a failure in any rank into
one ``TrainingError`` carrying that rank's traceback. ``init_rank`` is what every rank function calls first: joining
the ranks, seeds, thread budget, GPU pinning, optional mixed precision. It returns the ranks' collectives: Horovod's
module, or the same calls on the strategy.
"""
from __future__ import annotations

import logging
import os
import re
import sys
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional

from pyspark.sql import SparkSession

from visionlake.console import RankOutput
from visionlake.progress import TrainingProgress

if TYPE_CHECKING:
    from visionlake.config import TrainConfig

log = logging.getLogger(__name__)

_ERROR_MARKER = "VISIONLAKE-RANK-FAILED"
# What a rank raises when another rank failed first: Horovod's shutdown, TensorFlow's aborted collectives.
_PEER_GONE = re.compile(r"Horovod has been shut down|Collective ops is aborted|collective ops? .*aborted", re.I)


class TrainingError(RuntimeError):
    """A rank failed; ``rank`` and ``rank_traceback`` say where and why."""

    def __init__(self, rank: Optional[int], rank_traceback: str, cause: str):
        where = f"rank {rank}" if rank is not None else "a rank"
        super().__init__(f"distributed training failed on {where}: {cause}\n{rank_traceback}".rstrip())
        self.rank = rank
        self.rank_traceback = rank_traceback


@dataclass(frozen=True)
class RankSettings:
    """What ``init_rank`` needs, decided on the driver."""
    seed: int
    threads: int
    mixed_precision: bool = False
    engine: str = "horovod"


class _RankFailures:
    """Picks each failing rank's report (after ``_ERROR_MARKER``) out of the ranks' forwarded stderr."""

    def __init__(self):
        self.failures: dict[int, list[str]] = {}

    def root_cause(self) -> int:
        """The failing rank to report: the first to report a failure of its own, not the "a peer is gone" error
        the others raise because of it (their reports can arrive first)."""
        ranks = list(self.failures)
        own = [rank for rank in ranks if not _PEER_GONE.search("\n".join(self.failures[rank]))]
        return (own or ranks)[0]

    def __call__(self, rank: int, content: str) -> None:
        if content.startswith(_ERROR_MARKER):
            self.failures.setdefault(rank, [])
        elif rank in self.failures:
            self.failures[rank].append(content)


def _run_guarded(fn: Callable, args: tuple) -> Any:
    try:
        return fn(*args)
    except BaseException:
        # The marker lets the driver pick this rank's traceback out of the forwarded output.
        print(_ERROR_MARKER, file=sys.stderr, flush=True)
        print(traceback.format_exc(), file=sys.stderr, flush=True)
        raise


def run_on_ranks(spark: SparkSession, fn: Callable, args: tuple, num_proc: int,
                 engine: str = "horovod") -> list[Any]:
    """Runs ``fn(*args)`` on ``num_proc`` ranks of ``engine``, one Spark task each; returns the per-rank results.

    Raises:
        TrainingError: any rank raised or exited; the message holds the first failing rank's traceback.
    """
    master = spark.sparkContext.master
    loopback = on_loopback(master)
    env = {"TF_CPP_MIN_LOG_LEVEL": "2", **shipped_code_path(spark)}
    failures = _RankFailures()
    progress = TrainingProgress(lambda rank, text: log.info("rank %d: %s", rank, text))
    output = RankOutput(relay=progress, on_line=failures)
    log.info("starting %d %s rank(s) on %s", num_proc, "tf.distribute" if engine == "tf_distribute" else "Horovod",
             master)
    try:
        if engine == "tf_distribute":
            from visionlake.train.tf_distribute import run_on_barrier

            return run_on_barrier(spark, _run_guarded, (fn, args), num_proc, output, loopback, env)
        return _run_horovod(spark, fn, args, num_proc, output, loopback, env)
    except Exception as error:  # noqa: BLE001 - the engines raise plain RuntimeErrors; we add the rank's traceback
        output.flush()
        if failures.failures:
            rank = failures.root_cause()
            raise TrainingError(rank, "\n".join(failures.failures[rank]), str(error).splitlines()[0]) from error
        raise TrainingError(None, "", str(error)) from error
    finally:
        output.flush()
        progress.close()


def _with_relay(fn: Callable, args: tuple, relay_address: Optional[tuple[str, int]], token: str) -> Any:
    """A Horovod rank: its progress lines go to the driver's relay as they are printed."""
    from visionlake.train.relay import rank_lines_to_driver

    if relay_address is None:
        return fn(*args)
    with rank_lines_to_driver(int(os.environ["HOROVOD_RANK"]), relay_address, token):
        return fn(*args)


def _run_horovod(spark: SparkSession, fn: Callable, args: tuple, num_proc: int, output: RankOutput, loopback: bool,
                 env: dict[str, str]) -> list[Any]:
    import horovod.spark

    from visionlake.train.relay import LineRelay

    if loopback:
        env = {**env, "HOROVOD_GLOO_IFACE": "lo"}  # Gloo rendezvous on loopback only when every node is this machine
    try:
        relay: Optional[LineRelay] = LineRelay.on_driver(spark.sparkContext.getConf(), loopback, output)
    except OSError as error:  # live lines are a comfort: without them they arrive with Horovod's copy, at the end
        log.warning("cannot open the rank line relay (%s); rank progress will arrive when each run ends", error)
        relay = None
    relayed = (fn, args, relay.address if relay else None, relay.token if relay else "")
    try:
        # Gloo always: an MPI build of Horovod would pick MPI, whose ranks have no HOROVOD_RANK and no loopback pin.
        return horovod.spark.run(_run_guarded, args=(_with_relay, relayed), num_proc=num_proc, env=env,
                                 stdout=output, stderr=output, nics={"lo"} if loopback else None, verbose=0,
                                 use_gloo=True, executable=rank_python(spark))
    finally:
        if relay is not None:
            relay.close()


def on_loopback(master: str) -> bool:
    """Local mode, or a cluster whose master listens on loopback (every node is this machine, e.g. the test
    harness): the ranks must then talk over ``lo`` only."""
    return master.startswith("local") or bool(re.match(r"^spark://(127\.0\.0\.1|localhost)[:/]", master))


def rank_python(spark: SparkSession) -> str:
    """The interpreter Horovod starts each rank with: the executors' Python (``spark.pyspark.python``, e.g.
    ``./environment/bin/python`` from a packed environment shipped with ``--archives``), resolved in the task's
    working directory; the driver's own interpreter only in local mode, where the two are one machine."""
    if spark.sparkContext.master.startswith("local"):
        return sys.executable
    return spark.sparkContext.pythonExec  # what PySpark starts its Python workers with on the executors


def shipped_code_path(spark: SparkSession) -> dict[str, str]:
    """``PYTHONPATH`` for rank processes on a cluster: the ``--py-files`` (e.g. the visionlake wheel).

    PySpark puts them on its Python workers' ``sys.path`` itself, but Horovod starts each rank as a new process
    from the task, which would import whatever visionlake the executor's environment holds, or none. Executors
    keep shipped files in their working directory, where the rank process starts, so their names are enough.
    """
    if spark.sparkContext.master.startswith("local"):
        return {}
    shipped = spark.sparkContext.getConf().get("spark.submit.pyFiles", "")
    names = [uri.rstrip("/").rsplit("/", 1)[-1] for uri in shipped.split(",") if uri.strip()]
    return {"PYTHONPATH": os.pathsep.join(names)} if names else {}


def default_num_proc(spark: SparkSession, configured: int) -> int:
    return configured or spark.sparkContext.defaultParallelism


def init_rank(settings: RankSettings):
    """Joins the ranks and sets up this rank's process; returns the collectives (``horovod.tensorflow`` under
    Horovod, ``StrategyCollectives`` under tf.distribute: the same calls)."""
    import numpy as np
    import tensorflow as tf

    # Threads: N ranks on a machine share its cores instead of each starting one thread per core. Set before the
    # strategy starts TensorFlow's runtime.
    tf.config.threading.set_intra_op_parallelism_threads(settings.threads)
    tf.config.threading.set_inter_op_parallelism_threads(max(1, settings.threads // 2))
    if settings.engine == "tf_distribute":
        from visionlake.train import tf_distribute

        _pin_gpu(tf, tf_distribute.worker_local_rank(), settings)
        ranks = tf_distribute.join()
    else:
        import horovod.tensorflow as hvd

        hvd.init()  # Horovod: join the ranks
        _pin_gpu(tf, hvd.local_rank(), settings)
        ranks = hvd
    # Same initial weights come from rank 0's broadcast; the seed makes runs repeatable, ranks differ by offset.
    tf.keras.utils.set_random_seed(settings.seed)
    np.random.seed(settings.seed + ranks.rank())
    return ranks


def _pin_gpu(tf, local_rank: int, settings: RankSettings) -> None:
    """One GPU per rank process, chosen by its rank on the node."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        for gpu in gpus:
            tf.config.experimental.set_memory_growth(gpu, True)
        tf.config.set_visible_devices(gpus[local_rank % len(gpus)], "GPU")
        if settings.mixed_precision:
            tf.keras.mixed_precision.set_global_policy("mixed_float16")


def threads_per_rank(total_cores: int, num_proc: int, configured: int) -> int:
    return configured or max(1, total_cores // max(1, num_proc))


def rank_settings(spark: SparkSession, train: "TrainConfig", num_proc: int) -> RankSettings:
    """The per-rank environment from the shared ``train`` settings (seed, thread budget, precision)."""
    return RankSettings(seed=train.seed, mixed_precision=train.mixed_precision, engine=train.engine,
                        threads=threads_per_rank(spark.sparkContext.defaultParallelism, num_proc,
                                                 train.threads_per_rank))
